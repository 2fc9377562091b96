"""Content-Length framing on stream transports and RFC 5626 keep-alives."""

from __future__ import annotations

from sip.stream import Frame, FramingError, KeepAlive, StreamFramer

MSG = (
    b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


def test_messages_split_across_and_joined_in_chunks() -> None:
    f = StreamFramer()
    stream = MSG + MSG
    events = []
    for i in range(0, len(stream), 7):
        events += f.feed(stream[i : i + 7])
    assert events == [Frame(MSG), Frame(MSG)]


def test_keepalive_ping_between_messages() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n" + MSG) == [KeepAlive(), Frame(MSG)]
    assert f.feed(b"\r\n") == []
    assert f.feed(b"\r\n") == [KeepAlive()]


def test_missing_content_length_closes_the_stream() -> None:
    f = StreamFramer()
    ev = f.feed(MSG.replace(b"Content-Length: 4\r\n", b""))
    assert isinstance(ev[-1], FramingError)
    assert f.feed(MSG) == []  # nothing more is read from a failed stream


def test_negative_or_duplicate_content_length_fails() -> None:
    for bad in (b"Content-Length: -999\r\n", b"Content-Length: 4\r\nl: 4\r\n"):
        f = StreamFramer()
        ev = f.feed(MSG.replace(b"Content-Length: 4\r\n", bad))
        assert isinstance(ev[-1], FramingError)


def test_oversized_input_fails_without_buffering_forever() -> None:
    f = StreamFramer(max_size=2000)
    ev = f.feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: " + b"a" * 5000)
    assert isinstance(ev[-1], FramingError)


def test_large_declared_body_fails() -> None:
    f = StreamFramer(max_size=2000)
    ev = f.feed(MSG.replace(b"Content-Length: 4", b"Content-Length: 999999"))
    assert isinstance(ev[-1], FramingError)
