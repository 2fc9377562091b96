"""SDP parsing, round trip, and the anchoring rewrite, on offers shaped like real phones' SDP."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.sdp import (
    Connection,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SessionDescription,
    audio_endpoint,
    direction,
    rewrite_for_anchor,
)


def sdp(text: str) -> bytes:
    """Fixture text (one line per line, leading blanks stripped) as CRLF SDP bytes."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return ("\r\n".join(lines) + "\r\n").encode()


# Linphone 5.x offer: ICE, opus/speex, three telephone-event rates, a video stream, a=rtcp.
LINPHONE = sdp("""
    v=0
    o=alice 3262 2466 IN IP4 192.168.1.20
    s=Talk
    c=IN IP4 192.168.1.20
    t=0 0
    a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
    a=ice-ufrag:0e8f3b56
    a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
    a=record:off
    m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
    c=IN IP4 192.168.1.20
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 useinbandfec=1
    a=rtpmap:97 speex/16000
    a=fmtp:97 vbr=on
    a=rtpmap:98 speex/8000
    a=fmtp:98 vbr=on
    a=fmtp:18 annexb=yes
    a=rtpmap:101 telephone-event/48000
    a=rtpmap:99 telephone-event/16000
    a=rtpmap:100 telephone-event/8000
    a=rtcp:7079
    a=candidate:1 1 UDP 2130706431 192.168.1.20 7078 typ host
    a=candidate:1 2 UDP 2130706430 192.168.1.20 7079 typ host
    a=candidate:2 1 UDP 1694498815 203.0.113.7 40112 typ srflx raddr 192.168.1.20 rport 7078
    a=rtcp-fb:* trr-int 1000
    a=rtcp-fb:* ccm tmmbr
    m=video 9078 RTP/AVP 96 97
    c=IN IP4 192.168.1.20
    a=rtpmap:96 VP8/90000
    a=rtpmap:97 H264/90000
    a=fmtp:97 profile-level-id=42801F
    a=rtcp:9079
    a=rtcp-fb:96 nack pli
""")

# baresip 1.x / 3.x offer: session-level c=, G.711 and telephone-event with events 0-15.
BARESIP = sdp("""
    v=0
    o=- 1174470347 3624837613 IN IP4 10.0.0.5
    s=-
    c=IN IP4 10.0.0.5
    t=0 0
    m=audio 10562 RTP/AVP 0 8 101
    b=AS:88
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp-rsize
    a=ptime:20
    a=sendrecv
    a=label:1
    a=ssrc:1796358946 cname:2f5e9c02-4fbb-4a4f-9b8b-0b0b5c1f3a77
""")

# pjsua 2.x offer: media-level c= only, a=rtcp with an address, two telephone-event rates.
PJSUA = sdp("""
    v=0
    o=- 3898374410 3898374410 IN IP4 192.168.0.33
    s=pjmedia
    b=AS:84
    t=0 0
    a=X-nat:0
    m=audio 4000 RTP/AVP 96 9 8 0 101 102
    c=IN IP4 192.168.0.33
    b=TIAS:64000
    a=rtcp:4001 IN IP4 192.168.0.33
    a=sendrecv
    a=rtpmap:96 speex/16000
    a=rtpmap:9 G722/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/16000
    a=fmtp:101 0-16
    a=rtpmap:102 telephone-event/8000
    a=fmtp:102 0-16
    a=ssrc:1216537411 cname:4d9a4dc76e5c1e3b
""")

# SIPp's uac_pcap scenario (A-law audio and RFC 2833 events from a pcap).
SIPP = sdp("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 8 101
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-11,16
""")

IPV6 = sdp("""
    v=0
    o=- 1 1 IN IP6 2001:db8::10
    s=-
    c=IN IP6 2001:db8::10
    t=0 0
    m=audio 5004 RTP/AVP 0 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
""")

ALL_OFFERS = {"linphone": LINPHONE, "baresip": BARESIP, "pjsua": PJSUA, "sipp": SIPP, "ipv6": IPV6}


def with_direction(data: bytes, attribute: str) -> bytes:
    """BARESIP with its a=sendrecv replaced."""
    return data.replace(b"a=sendrecv", f"a={attribute}".encode())


# -- parse and round trip -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_OFFERS)
def test_round_trip_is_exact(name: str) -> None:
    data = ALL_OFFERS[name]
    assert bytes(SessionDescription.parse(data)) == data


def test_bare_lf_is_accepted_and_written_back_as_crlf() -> None:
    lf = SIPP.replace(b"\r\n", b"\n")
    assert bytes(SessionDescription.parse(lf)) == SIPP


def test_unknown_lines_keep_their_place() -> None:
    data = sdp("""
        v=0
        o=- 1 1 IN IP4 10.0.0.1
        s=-
        x=experimental line
        c=IN IP4 10.0.0.1
        t=0 0
        a=group:BUNDLE 0
        m=audio 5000 RTP/AVP 0
        y=another one
        a=mid:0
    """)
    sd = SessionDescription.parse(data)
    assert [str(line) for line in sd.session][3] == "x=experimental line"
    assert str(sd.media[0].lines[1]) == "y=another one"
    assert bytes(sd) == data


def test_non_utf8_session_name_round_trips() -> None:
    data = SIPP.replace(b"s=-", b"s=caf\xe9")
    assert bytes(SessionDescription.parse(data)) == data


def test_model_of_a_linphone_offer() -> None:
    sd = SessionDescription.parse(LINPHONE)
    assert sd.origin == Origin("alice", 3262, 2466, "IN", "IP4", "192.168.1.20")
    assert sd.connection == Connection("IN", "IP4", "192.168.1.20")
    assert [m.media for m in sd.media] == ["audio", "video"]
    audio = sd.media[0]
    assert audio.port == 7078
    assert audio.proto == "RTP/AVP"
    assert audio.formats == ("96", "97", "98", "0", "8", "18", "101", "99", "100")
    assert audio.rtpmaps[0] == RtpMap(96, "opus", 48000, 2)
    assert RtpMap(100, "telephone-event", 8000) in audio.rtpmaps
    assert audio.fmtp(96) == "useinbandfec=1"
    assert audio.fmtp(18) == "annexb=yes"
    assert audio.fmtp(0) is None
    assert audio.rtcp == RtcpAttribute(7079)
    assert audio.direction is None
    assert audio.attribute("rtcp-fb") == "* trr-int 1000"


def test_model_of_baresip_and_pjsua_offers() -> None:
    baresip = SessionDescription.parse(BARESIP)
    audio = baresip.media[0]
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.connection is None  # session-level only
    assert audio.attribute("rtcp-rsize") == ""
    pjsua = SessionDescription.parse(PJSUA)
    assert pjsua.connection is None  # media-level only
    assert pjsua.media[0].rtcp == RtcpAttribute(4001, Connection("IN", "IP4", "192.168.0.33"))
    assert pjsua.media[0].ptime is None


def test_large_session_ids_are_kept() -> None:
    data = SIPP.replace(b"53655765 2353687637", b"18446744073709551616 18446744073709551617")
    sd = SessionDescription.parse(data)
    assert sd.origin.session_id == 18446744073709551616
    assert sd.origin.session_version == 18446744073709551617


# -- what the B2BUA asks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("linphone", ("192.168.1.20", 7078)),
        ("baresip", ("10.0.0.5", 10562)),
        ("pjsua", ("192.168.0.33", 4000)),
        ("sipp", ("127.0.0.1", 6000)),
        ("ipv6", ("2001:db8::10", 5004)),
    ],
)
def test_audio_endpoint(name: str, endpoint: tuple[str, int]) -> None:
    sd = SessionDescription.parse(ALL_OFFERS[name])
    assert audio_endpoint(sd) == endpoint
    assert direction(sd) == "sendrecv"


def test_media_level_connection_overrides_session_level() -> None:
    data = SIPP.replace(b"a=rtpmap:8", b"c=IN IP4 198.51.100.7\r\na=rtpmap:8")
    sd = SessionDescription.parse(data)
    assert audio_endpoint(sd) == ("198.51.100.7", 6000)


def test_rejected_or_missing_audio_has_no_endpoint() -> None:
    rejected = SessionDescription.parse(SIPP.replace(b"m=audio 6000", b"m=audio 0"))
    assert audio_endpoint(rejected) is None
    assert direction(rejected) == "inactive"
    video_only = SessionDescription.parse(SIPP.replace(b"m=audio", b"m=video"))
    assert audio_endpoint(video_only) is None


def test_a_re_offer_appends_a_new_audio_stream_after_a_disabled_one() -> None:
    # RFC 3264 8: streams are disabled with port 0, never removed; a new one is appended.
    data = SIPP.replace(b"m=audio 6000", b"m=audio 0") + sdp("""
        m=audio 6010 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
    """)
    sd = SessionDescription.parse(data)
    assert audio_endpoint(sd) == ("127.0.0.1", 6010)
    rewritten = rewrite_for_anchor(sd, "10.1.1.1", 30000, 5, 6)
    assert [m.port for m in rewritten.media] == [0, 30000]


@pytest.mark.parametrize("attribute", ["sendonly", "recvonly", "inactive", "sendrecv"])
def test_direction_media_level(attribute: str) -> None:
    sd = SessionDescription.parse(with_direction(BARESIP, attribute))
    assert direction(sd) == attribute


def test_direction_session_level_and_override() -> None:
    session_level = SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert direction(SessionDescription.parse(session_level)) == "sendonly"
    overridden = session_level + b"a=recvonly\r\n"
    assert direction(SessionDescription.parse(overridden)) == "recvonly"


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("sendrecv", "sendonly"), ("sendonly", "sendonly"), ("recvonly", "inactive"),
     ("inactive", "inactive")],
)
def test_legacy_hold_with_unspecified_address(attribute: str, expected: str) -> None:
    # RFC 3264 8.4: c=0.0.0.0 means "do not send to me".
    data = with_direction(BARESIP, attribute).replace(b"c=IN IP4 10.0.0.5", b"c=IN IP4 0.0.0.0")
    sd = SessionDescription.parse(data)
    assert direction(sd) == expected
    assert audio_endpoint(sd) is None


# -- the anchoring rewrite -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_OFFERS)
def test_rewrite_keeps_codecs_and_telephone_events(name: str) -> None:
    sd = SessionDescription.parse(ALL_OFFERS[name])
    out = SessionDescription.parse(bytes(rewrite_for_anchor(sd, "203.0.113.1", 20000, 77, 1)))
    assert audio_endpoint(out) == ("203.0.113.1", 20000)
    assert out.media[0].formats == sd.media[0].formats
    assert out.media[0].rtpmaps == sd.media[0].rtpmaps
    for rtpmap in sd.media[0].rtpmaps:
        assert out.media[0].fmtp(rtpmap.payload_type) == sd.media[0].fmtp(rtpmap.payload_type)
    assert any(r.encoding == "telephone-event" for r in out.media[0].rtpmaps)
    assert out.origin == Origin("-", 77, 1, "IN", "IP4", "203.0.113.1")
    assert direction(out) == direction(sd)


def test_rewrite_of_linphone_offer_exactly() -> None:
    sd = SessionDescription.parse(LINPHONE)
    out = bytes(rewrite_for_anchor(sd, "203.0.113.1", 20000, 9001, 3, username="pbx"))
    assert out == sdp("""
        v=0
        o=pbx 9001 3 IN IP4 203.0.113.1
        s=Talk
        c=IN IP4 203.0.113.1
        t=0 0
        a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
        a=record:off
        m=audio 20000 RTP/AVP 96 97 98 0 8 18 101 99 100
        c=IN IP4 203.0.113.1
        a=rtpmap:96 opus/48000/2
        a=fmtp:96 useinbandfec=1
        a=rtpmap:97 speex/16000
        a=fmtp:97 vbr=on
        a=rtpmap:98 speex/8000
        a=fmtp:98 vbr=on
        a=fmtp:18 annexb=yes
        a=rtpmap:101 telephone-event/48000
        a=rtpmap:99 telephone-event/16000
        a=rtpmap:100 telephone-event/8000
        a=rtcp:20001
        a=rtcp-fb:* trr-int 1000
        a=rtcp-fb:* ccm tmmbr
        m=video 0 RTP/AVP 96 97
        c=IN IP4 203.0.113.1
        a=rtpmap:96 VP8/90000
        a=rtpmap:97 H264/90000
        a=fmtp:97 profile-level-id=42801F
        a=rtcp-fb:96 nack pli
    """)


def test_rewrite_rtcp_with_address_and_rtcp_mux_removed() -> None:
    data = PJSUA.replace(b"a=sendrecv", b"a=sendrecv\r\na=rtcp-mux\r\na=ice-options:trickle")
    out = rewrite_for_anchor(SessionDescription.parse(data), "10.9.9.9", 40000, 1, 2)
    audio = out.media[0]
    assert audio.rtcp == RtcpAttribute(40001, Connection("IN", "IP4", "10.9.9.9"))
    assert audio.attribute("rtcp-mux") is None
    assert audio.attribute("ice-options") is None
    assert audio.connection == Connection("IN", "IP4", "10.9.9.9")
    assert out.connection is None  # pjsua had no session-level c=, none is added


def test_rewrite_does_not_touch_the_original() -> None:
    sd = SessionDescription.parse(LINPHONE)
    rewrite_for_anchor(sd, "203.0.113.1", 20000, 1, 1)
    assert bytes(sd) == LINPHONE


@pytest.mark.parametrize("attribute", ["sendonly", "inactive", "recvonly"])
def test_rewrite_passes_hold_through(attribute: str) -> None:
    sd = SessionDescription.parse(with_direction(BARESIP, attribute))
    out = rewrite_for_anchor(sd, "203.0.113.1", 20000, 1, 2)
    assert direction(out) == attribute
    assert out.media[0].direction == attribute


def test_rewrite_turns_legacy_hold_into_an_attribute() -> None:
    data = BARESIP.replace(b"c=IN IP4 10.0.0.5", b"c=IN IP4 0.0.0.0")
    out = rewrite_for_anchor(SessionDescription.parse(data), "203.0.113.1", 20000, 1, 2)
    assert out.connection == Connection("IN", "IP4", "203.0.113.1")
    assert out.media[0].direction == "sendonly"
    assert direction(out) == "sendonly"
    assert [a.name for a in out.media[0].attributes].count("sendrecv") == 0


def test_rewrite_with_ipv6_relay_address() -> None:
    sd = SessionDescription.parse(SIPP)
    out = rewrite_for_anchor(sd, "2001:db8::1", 20000, 1, 1)
    assert out.connection == Connection("IN", "IP6", "2001:db8::1")
    assert out.origin.addrtype == "IP6"
    assert audio_endpoint(out) == ("2001:db8::1", 20000)


def test_rewrite_of_ipv6_offer_to_ipv4_relay() -> None:
    out = rewrite_for_anchor(SessionDescription.parse(IPV6), "192.0.2.1", 20000, 1, 1)
    assert b"IP6" not in bytes(out)
    assert audio_endpoint(out) == ("192.0.2.1", 20000)


def test_rewrite_keeps_a_rejected_audio_stream_rejected() -> None:
    sd = SessionDescription.parse(SIPP.replace(b"m=audio 6000", b"m=audio 0"))
    out = rewrite_for_anchor(sd, "192.0.2.1", 20000, 1, 1)
    assert out.media[0].port == 0


def test_version_increments_are_the_callers() -> None:
    sd = SessionDescription.parse(SIPP)
    first = rewrite_for_anchor(sd, "192.0.2.1", 20000, 555, 1)
    second = rewrite_for_anchor(sd, "192.0.2.1", 20000, 555, 2)
    assert (first.origin.session_id, first.origin.session_version) == (555, 1)
    assert (second.origin.session_id, second.origin.session_version) == (555, 2)


@pytest.mark.parametrize(
    ("address", "port", "session_id", "version"),
    [("", 20000, 1, 1), ("a b", 20000, 1, 1), ("192.0.2.1", 0, 1, 1),
     ("192.0.2.1", 65535, 1, 1), ("192.0.2.1", 20000, -1, 1), ("192.0.2.1", 20000, 1, -1)],
)
def test_rewrite_rejects_bad_arguments(
    address: str, port: int, session_id: int, version: int
) -> None:
    with pytest.raises(SdpError):
        rewrite_for_anchor(SessionDescription.parse(SIPP), address, port, session_id, version)


# -- errors ----------------------------------------------------------------------------------


def test_missing_connection_is_an_error() -> None:
    data = SIPP.replace(b"c=IN IP4 127.0.0.1\r\n", b"")
    with pytest.raises(SdpError, match=r"line 5: m=audio stream has no c= line"):
        SessionDescription.parse(data)


def test_missing_connection_on_a_disabled_stream_is_tolerated() -> None:
    data = SIPP.replace(b"c=IN IP4 127.0.0.1\r\n", b"").replace(b"m=audio 6000", b"m=audio 0")
    assert audio_endpoint(SessionDescription.parse(data)) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty SDP"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "line 1: SDP must start with v=0"),
        (b"v=1\r\n", "line 1: unsupported SDP version"),
        (b"v=0\r\ns=-\r\n", "missing o= line"),
        (b"v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", "line 2: bad o= line"),
        (b"v=0\r\no=- 1 1 IN IP4\r\n", "line 2: bad o= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\n", "line 3: duplicate o= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP5 1.2.3.4\r\n", "line 3: bad c= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio x RTP/AVP 0\r\n",
         "line 4: bad m= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n",
         "line 4: bad m= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio\r\n", "line 4: bad m= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
         "line 5: bad a=rtpmap"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:300 X/8000\r\n",
         "line 5: bad a=rtpmap"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:port\r\n",
         "line 5: bad a=rtcp"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\nv=0\r\n",
         "line 5: v= not allowed in a media section"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2: expected '<type>=<value>'"),
        (b"v=0\r\nA=upper\r\n", "line 2: expected '<type>=<value>'"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\ns=a\x00b\r\n", "line 3: control character"),
        (b"v=0\r\no=- 1 1 IN IP4 \xd9\xa1\r\n", None),  # non-ASCII address: accepted
    ],
)
def test_parse_errors_name_the_line(data: bytes, message: str | None) -> None:
    if message is None:
        SessionDescription.parse(data)
        return
    with pytest.raises(SdpError, match=message):
        SessionDescription.parse(data)


def test_non_bytes_is_an_sdp_error() -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse("v=0\r\n")  # type: ignore[arg-type]


def test_unicode_digits_are_not_numbers() -> None:
    # "١" is an Arabic-Indic digit: str.isdigit() says yes, but SDP numbers are ASCII.
    with pytest.raises(SdpError, match="bad o= line"):
        SessionDescription.parse("v=0\r\no=- \u0661 1 IN IP4 a\r\n".encode())
    with pytest.raises(SdpError, match="bad m= line"):
        SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nm=audio \u0661 R 0\r\n"
                                 .encode())


# -- fuzzing: nothing but SdpError, and whatever parses round-trips ---------------------------

_line = st.one_of(
    st.sampled_from(
        [b"v=0", b"o=- 1 1 IN IP4 1.2.3.4", b"c=IN IP4 1.2.3.4", b"c=IN IP4 0.0.0.0",
         b"m=audio 5000 RTP/AVP 0 101", b"m=video 0 RTP/AVP 96",
         b"a=rtpmap:101 telephone-event/8000",
         b"a=fmtp:101 0-16", b"a=rtcp:5001", b"a=sendonly", b"a=inactive", b"a=candidate:1 1 UDP",
         b"a=rtcp:1 IN IP6 ::1", b"a=ptime:20", b"s=-", b"t=0 0", b"", b"c=IN IP6 ::"]
    ),
    st.binary(max_size=40),
    st.builds(
        lambda k, v: k + b"=" + v,
        st.sampled_from([b"v", b"o", b"c", b"m", b"a", b"s", b"t", b"b"]),
        st.binary(max_size=30),
    ),
)


def _exercise(sd: SessionDescription) -> None:
    """Every view of a parsed description works, and the rewrite output parses again."""
    assert SessionDescription.parse(bytes(sd)) == sd
    audio_endpoint(sd)
    direction(sd)
    _ = sd.origin, sd.connection, sd.attributes
    for section in sd.media:
        _ = (section.media, section.port, section.proto, section.formats, section.connection,
             section.rtpmaps, section.ptime, section.direction, section.rtcp, section.fmtp(101))
    out = rewrite_for_anchor(sd, "192.0.2.1", 20000, 1, 2)
    assert SessionDescription.parse(bytes(out)) == out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_line, max_size=14), st.sampled_from([b"\r\n", b"\n"]))
def test_fuzz_structured_lines(lines: list[bytes], newline: bytes) -> None:
    try:
        sd = SessionDescription.parse(newline.join([b"v=0", *lines]))
    except SdpError:
        return
    _exercise(sd)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_garbage(data: bytes) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError:
        return
    _exercise(sd)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(ALL_OFFERS.values())), st.data())
def test_fuzz_mutated_real_offers(offer: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(offer) - 1))
    replacement = data.draw(st.binary(max_size=4))
    mutated = offer[:position] + replacement + offer[position + 1:]
    try:
        sd = SessionDescription.parse(mutated)
    except SdpError:
        return
    _exercise(sd)


def test_audio_answer_picks_the_first_g711_and_telephone_event() -> None:
    from media.sdp import audio_answer

    offer = SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 9 8 0 96\r\na=rtpmap:9 G722/8000\r\n"
        b"a=rtpmap:96 telephone-event/8000\r\n"
        b"a=sendonly\r\nm=video 5006 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
    )
    found = audio_answer(offer, "198.51.100.1", 40000, 7, 1)
    assert found is not None
    answer, pt, event = found
    assert (pt, event) == (8, 96)
    audio = answer.audio
    assert audio is not None and audio.port == 40000 and audio.formats == ("8", "96")
    assert audio_endpoint(answer) == ("198.51.100.1", 40000)
    # RFC 3264 6.1: a sendonly offer (the phone holds) is answered recvonly; video is refused.
    assert direction(answer) == "recvonly"
    assert answer.media[1].port == 0
    assert audio_answer(offer, "198.51.100.1", 40000, 7, 1, codecs=("0",)) is not None
    no_g711 = SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n"
    )
    assert audio_answer(no_g711, "198.51.100.1", 40000, 7, 1) is None
