"""UDP sockets for RTP: binding an RTP/RTCP port pair from the allocator, and writing a remote
address the way a socket of one family needs it. Shared by the per-call relay
(:mod:`media.udp`), the shared-port relay (:mod:`media.shared`) and the PBX's own legs
(:mod:`media.local`)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable

from media.relay import Address, NoPortsError, PortAllocator

__all__ = ["bind_pair", "bind_udp", "for_socket"]

# Errors that say "this port is taken (or forbidden), try another"; anything else (a bind
# address that is not ours, say) would fail on every port, so it is raised at once.
_PORT_BUSY = frozenset({errno.EADDRINUSE, errno.EACCES})


def bind_udp(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)``."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_pair(
    ports: PortAllocator, host: str, bind: Callable[[str, int], socket.socket]
) -> tuple[int, socket.socket, socket.socket]:
    """Take an even port from ``ports`` and bind it and the next one (RTCP, RFC 3550 11) on
    ``host`` with ``bind``. Ports another program holds are skipped; raises
    :class:`~media.relay.NoPortsError` when no pair in the range can be had."""
    last_error: OSError | None = None
    # Each failed port goes to the back of the queue, so this visits every free port once.
    for _ in range(max(1, ports.available)):
        port = ports.allocate()
        try:
            rtp = bind(host, port)
            try:
                rtcp = bind(host, port + 1)
            except BaseException:
                rtp.close()
                raise
        except OSError as exc:
            ports.release(port)
            if exc.errno not in _PORT_BUSY:
                raise
            last_error = exc
            continue
        return port, rtp, rtcp
    raise NoPortsError(f"no free RTP port pair could be bound on {host}: {last_error}")


def for_socket(family: socket.AddressFamily, addr: Address, owner: str = "socket") -> Address:
    """``addr`` (an IP literal and a port) as a socket of ``family`` sends to it; ``owner``
    names the socket's user in the error for an address it cannot reach."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except (ValueError, TypeError, IndexError):
        raise ValueError(f"remote {addr!r} is not an IP address literal") from None
    port = addr[1]
    if family == socket.AF_INET6 and ip.version == 4:
        # A dual-stack socket reaches IPv4 peers through IPv4-mapped addresses (RFC 4291).
        return (f"::ffff:{ip}", port)
    if family == socket.AF_INET and ip.version == 6:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if mapped is None:
            raise ValueError(f"remote {addr!r} is IPv6 but the {owner} is bound to IPv4")
        return (str(mapped), port)
    return (str(ip), port)
