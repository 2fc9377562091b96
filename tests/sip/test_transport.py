"""The asyncio SIP transport over real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest

from sip.events import RequestReceived
from sip.transaction import TransactionEvent, TransactionLayer
from sip.transport import ListenSpec, SipTransport

OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt1\r\n"
    b"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.asyncio
async def test_stalled_partial_message_is_closed_idle_connection_stays() -> None:
    events: list[TransactionEvent] = []
    transport = SipTransport(TransactionLayer(), events.append)
    host, port = await transport.listen(ListenSpec("tcp", "127.0.0.1", 0))
    trickle_r, trickle_w = await asyncio.open_connection(host, port)
    _idle_r, idle_w = await asyncio.open_connection(host, port)
    try:
        trickle_w.write(OPTIONS[:40])  # half a request line, then nothing more
        await trickle_w.drain()
        await asyncio.sleep(0.3)
        assert transport.close_stalled(older_than=0.2) == 1
        assert await asyncio.wait_for(trickle_r.read(100), 2) == b""  # closed by the server
        # The idle connection was left alone and is still served.
        idle_w.write(OPTIONS)
        await idle_w.drain()
        for _ in range(50):
            if events:
                break
            await asyncio.sleep(0.02)
        assert isinstance(events[0], RequestReceived)
        assert events[0].request.method == "OPTIONS"
    finally:
        for w in (trickle_w, idle_w):
            w.close()
        await transport.close()


@pytest.mark.asyncio
async def test_garbage_datagrams_never_reach_the_transaction_user() -> None:
    events: list[TransactionEvent] = []
    transport = SipTransport(TransactionLayer(), events.append)
    host, port = await transport.listen(ListenSpec("udp", "127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    sock, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                  remote_addr=(host, port))
    try:
        for junk in (b"\x00" * 100, b"hello", b"SIP/2.0 999 Nope\r\n\r\n", b"\r\n\r\n"):
            sock.sendto(junk)
        await asyncio.sleep(0.2)
        assert events == []
        assert transport.bad_messages >= 2
    finally:
        sock.close()
        await transport.close()
