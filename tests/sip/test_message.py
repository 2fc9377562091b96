"""The SIP parser and serialiser: RFC 4475 torture messages, round trips, hostile input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import ParseError
from sip.message import Request, Response, cancel_for, parse
from sip.uri import Address, SipUri

TORTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rfc4475"
MANIFEST = json.loads((TORTURE / "manifest.json").read_text())["messages"]


def _load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def test_all_49_torture_messages_are_present() -> None:
    assert len(MANIFEST) == 49


@pytest.mark.parametrize("case", MANIFEST, ids=[m["id"] for m in MANIFEST])
def test_torture_message_parses_as_the_rfc_says(case: dict[str, object]) -> None:
    data = _load(str(case["id"]))
    expect = case["expect"]
    if expect == "accept":
        msg = parse(data)
        assert isinstance(msg, Request)
        # A well-formed message survives a round trip through the serialiser.
        again = parse(bytes(msg))
        assert again.call_id == msg.call_id
        assert again.cseq == msg.cseq
        assert again.body == msg.body
    elif expect == "reject":
        # Either the parser rejects it with a 4xx/5xx hint, or it is well-formed and the
        # application rejects it (416, 420, 415, 406, 401...: tested end to end).
        try:
            parse(data)
        except ParseError as e:
            assert 400 <= e.status_code < 600
            preferred = case["preferred"]
            if preferred:
                assert e.status_code in preferred  # type: ignore[operator]
    elif expect == "drop":
        # Responses (stray, or broken) are never answered: parsing either works or fails.
        try:
            msg = parse(data)
        except ParseError:
            return
        assert isinstance(msg, Response)
    else:  # lenient / robust: a 400 or normal processing, never anything else
        try:
            parse(data)
        except ParseError as e:
            assert e.status_code == 400


def test_short_tortuous_invite_fields() -> None:
    msg = parse(_load("wsinv"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri.params == {"unknownparam": None}
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.headers.get("Max-Forwards") == "0068"
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.vias[1].branch == "z9hG4bK9ikj8"
    assert msg.vias[2].host == "192.168.255.111"
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.contacts[0].display == 'Quoted string ""'
    assert msg.contacts[0].params["q"] == "0.33"
    assert len(msg.body) == 150


def test_escaped_nulls_do_not_shorten_the_aor() -> None:
    msg = parse(_load("escnull"))
    assert msg.to.uri.user == "null-%00-null"


def test_trailing_datagram_octets_are_ignored() -> None:
    msg = parse(_load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""


def test_multipart_binary_body_kept_exactly() -> None:
    msg = parse(_load("mpart01"))
    assert b"\x00" in msg.body
    assert len(msg.body) == int(msg.headers.get("Content-Length") or 0)


@pytest.mark.parametrize(
    ("name", "code"),
    [("badvers", 505), ("scalar02", 400), ("mismatch01", 400), ("insuf", 400),
     ("multi01", 400), ("mcl01", 400), ("ncl", 400), ("clerr", 400), ("badinv01", 400)],
)
def test_rejected_requests_keep_enough_to_answer(name: str, code: int) -> None:
    with pytest.raises(ParseError) as info:
        parse(_load(name))
    assert info.value.status_code == code
    partial = info.value.partial
    assert isinstance(partial, Request)
    if name not in ("badvers",):
        resp = partial.response(code)
        assert resp.headers.get("Call-ID") == partial.headers.get("Call-ID")


def test_compact_forms_expand() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;rport\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\n"
        b"i: abc@host\r\nCSeq: 1 INVITE\r\nm: <sip:alice@192.0.2.1:5070>\r\n"
        b"c: application/sdp\r\nl: 3\r\n\r\nv=0"
    )
    msg = parse(data)
    assert msg.call_id == "abc@host"
    assert msg.content_type == "application/sdp"
    assert msg.top_via.port == 5070 and msg.top_via.params["rport"] is None
    assert msg.body == b"v=0"
    out = bytes(msg)
    assert b"Call-ID: abc@host\r\n" in out and b"Content-Length: 3\r\n" in out


def test_list_headers_split_and_serialise_one_per_line() -> None:
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com"
        b";branch=z9hG4bK2\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 2 OPTIONS\r\nContact: <sip:a@h1>, \"Name, With Comma\" <sip:a@h2>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse(data)
    assert [v.host for v in msg.vias] == ["a.example.com", "b.example.com"]
    assert [c.uri.host for c in msg.contacts] == ["h1", "h2"]
    assert msg.contacts[1].display == "Name, With Comma"


def test_response_copies_the_right_headers_and_adds_to_tag() -> None:
    msg = parse(_load("wsinv"))
    assert isinstance(msg, Request)
    msg.set_to(Address.parse("<sip:bob@example.com>"))
    resp = msg.response(180, to_tag="xyz")
    assert resp.status == 180 and resp.reason == "Ringing"
    assert resp.to.tag == "xyz"
    assert len(resp.vias) == 3
    assert resp.headers.get("Route") is None
    assert parse(bytes(resp)).to.tag == "xyz"


def test_content_length_is_always_written_from_the_body() -> None:
    msg = parse(_load("dblreq"))
    msg.body = b"hello"
    assert b"Content-Length: 5\r\n\r\nhello" in bytes(msg)


@pytest.mark.parametrize(
    "text",
    ["sip:alice@example.com", "sips:alice:pw@[2001:db8::1]:5061;transport=tls",
     "sip:example.com;lr", "sip:+81312345678@carrier.example;user=phone?Subject=hi",
     "tel:+81312345678"],
)
def test_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["sip:", "sip:alice@", "sip:alice@exa mple.com", "sip:a@h:99999", "sip:a@[zz]"]
)
def test_bad_uris_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        SipUri.parse(text)


def test_address_forms() -> None:
    a = Address.parse('"Alice \\"A\\"" <sip:alice@example.com>;tag=9')
    assert a.display == 'Alice "A"' and a.tag == "9"
    assert Address.parse(str(a)) == a
    b = Address.parse("sip:bob@example.com;tag=5")
    assert b.tag == "5" and b.uri.params == {}
    assert Address.parse("*").wildcard


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_messages_never_crash(data: st.DataObject) -> None:
    base = bytearray(_load("wsinv"))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    try:
        msg = parse(bytes(base))
    except ParseError:
        return
    bytes(msg)  # whatever parsed can be serialised


def test_cancel_for_an_invite_matches_its_transaction() -> None:
    invite = parse(
        b"INVITE sip:bob@10.0.0.2:5062 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdef\r\n"
        b"Max-Forwards: 69\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\n"
        b"Call-ID: c1@pbx\r\nCSeq: 7 INVITE\r\nContact: <sip:pbx@10.0.0.1>\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert isinstance(invite, Request)
    cancel = cancel_for(invite, 'SIP;cause=200;text="Call completed elsewhere"')
    # RFC 3261 9.1: only the top Via, the same Request-URI, Call-ID, From, To and CSeq number.
    assert cancel.method == "CANCEL" and str(cancel.raw_uri) == "sip:bob@10.0.0.2:5062"
    assert cancel.headers.get_all("Via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc"]
    assert (cancel.cseq.seq, cancel.cseq.method) == (7, "CANCEL")
    assert cancel.call_id == "c1@pbx" and cancel.headers.get("To") == "<sip:bob@pbx.test>"
    assert cancel.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert cancel_for(invite).headers.get("Reason") is None
