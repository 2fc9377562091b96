"""Free loopback ports for test peers.

A port is probed by binding it, then released for the peer to take. The
window between the probe and the peer's own bind is short, and every test
picks its own ports, so collisions are rare; callers that can retry should.
"""

from __future__ import annotations

import contextlib
import random
import socket

LOOPBACK = "127.0.0.1"


def _bindable(port: int, kinds: tuple[int, ...]) -> bool:
    """Whether ``port`` can be bound on loopback for every socket kind in ``kinds``."""
    socks: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port(attempts: int = 50) -> int:
    """A loopback port free for both UDP and TCP (SIP listens on both).

    The kernel picks a free TCP port; it is kept only if UDP can bind it too.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port: int = tcp.getsockname()[1]
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            ):
                udp.bind((LOOPBACK, port))
                return port
    raise RuntimeError(f"no port free for both UDP and TCP after {attempts} attempts")


def free_port_block(size: int = 4, attempts: int = 200) -> int:
    """The first of ``size`` consecutive free UDP ports, starting at an even port.

    RTP takes an even port and RTCP the next one (RFC 3550 section 11); SIPp's
    ``-mp`` port also takes the two above it for video.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 60000 - size, 2)
        if all(_bindable(base + i, (socket.SOCK_DGRAM,)) for i in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free UDP ports after {attempts} attempts")
