"""The pure parts of transfers: Replaces in Refer-To, re-offers to a new party."""

from __future__ import annotations

from media.sdp import SessionDescription, direction, with_direction
from media.transcode import g711_offer
from pbx.transfer import ReplacesRef, replaces_of
from sip.uri import Address

HELD = (
    b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"a=recvonly\r\n"
    b"m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=sendonly\r\na=ptime:20\r\n"
)


def test_blind_refer_to_has_no_replaces() -> None:
    uri = Address.parse("<sip:103@pbx.test>").uri
    assert replaces_of(uri) is False


def test_replaces_is_read_from_escaped_uri_headers() -> None:
    # RFC 3891 / RFC 5589 7.1: the Replaces value travels escaped in the Refer-To URI.
    uri = Address.parse(
        "<sip:103@pbx.test?Replaces=abc%40host%3Bto-tag%3D111%3Bfrom-tag%3D222>").uri
    assert replaces_of(uri) == ReplacesRef("abc@host", "111", "222")


def test_malformed_replaces_is_none() -> None:
    uri = Address.parse("<sip:103@pbx.test?Replaces=abc%40host%3Bto-tag%3D1>").uri
    assert replaces_of(uri) is None


def test_reoffer_keeps_the_talking_codec_first_and_only_g711_and_events() -> None:
    sd = SessionDescription.parse(HELD)
    out = with_direction(g711_offer(sd, "8"), "sendrecv")
    audio = out.audio
    assert audio is not None
    assert audio.formats == ("8", "0", "101")
    text = bytes(out).decode()
    assert "G722" not in text and "a=fmtp:101 0-16" in text
    assert text.count("a=rtpmap:8 ") == 1 and text.count("a=rtpmap:0 ") == 1
    # The hold of the old party does not carry over to the new one.
    assert direction(out) == "sendrecv" and "recvonly" not in text and "sendonly" not in text
