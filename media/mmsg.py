"""Batched UDP I/O for IPv4 sockets: ``recvmmsg`` and ``sendmmsg`` (Linux) over numpy buffers.

One :class:`MmsgBuffers` holds preallocated receive slots and the message headers of both
calls, laid out as numpy arrays so that a whole batch is read and addressed with array
operations: the source address of message ``i`` is ``src_ip[i]`` / ``src_port[i]``, its length
``lengths[i]``, its bytes ``data[i, :lengths[i]]``. A send points each message at a slot of the
receive buffer and at a destination ``sockaddr_in`` held by the caller, so forwarding copies no
payload in user space.

This is the thin system-call adapter of :mod:`media.shared`; it knows nothing of RTP.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MSG_TRUNC", "SLOT", "MmsgBuffers", "available", "sockaddr_in"]

#: Bytes per receive slot: any RTP or RTCP datagram that fits an Ethernet frame.
SLOT = 2048
MSG_TRUNC = 0x20  # <sys/socket.h>: the datagram was longer than the slot
_MSG_DONTWAIT = 0x40
_HDR = 64  # sizeof(struct mmsghdr) on 64-bit Linux

_recvmmsg: Any = None
_sendmmsg: Any = None
if sys.platform.startswith("linux") and ctypes.sizeof(ctypes.c_void_p) == 8:
    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _recvmmsg = _libc.recvmmsg
    _recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                          ctypes.c_void_p]
    _recvmmsg.restype = ctypes.c_int
    _sendmmsg = _libc.sendmmsg
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    _sendmmsg.restype = ctypes.c_int


def available() -> bool:
    """True where ``recvmmsg``/``sendmmsg`` can be used (64-bit Linux)."""
    return _recvmmsg is not None and _sendmmsg is not None


def sockaddr_in(host: str, port: int) -> NDArray[np.uint8]:
    """The 16 bytes of a ``struct sockaddr_in`` for an IPv4 ``host`` literal and ``port``."""
    out = np.zeros(16, dtype=np.uint8)
    out[0:2].view("<u2")[0] = socket.AF_INET
    out[2:4].view(">u2")[0] = port
    out[4:8] = np.frombuffer(socket.inet_aton(host), dtype=np.uint8)
    return out


def _ptr(array: NDArray[np.generic]) -> int:
    return int(array.ctypes.data)


class MmsgBuffers:
    """Receive slots and message headers for batches of up to ``size`` datagrams."""

    def __init__(self, size: int = 512) -> None:
        if not available():
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg need 64-bit Linux")
        self.size = size
        #: The received datagrams, one slot per message; forwarding sends straight from here.
        self.data = np.zeros((size, SLOT), dtype=np.uint8)
        self._names = np.zeros((size, 16), dtype=np.uint8)  # sources (sockaddr_in)
        iov = np.zeros((size, 2), dtype=np.uint64)
        iov[:, 0] = _ptr(self.data) + np.arange(size, dtype=np.uint64) * SLOT
        iov[:, 1] = SLOT
        self._iov = iov
        msgs = np.zeros((size, 8), dtype=np.uint64)  # struct mmsghdr
        msgs[:, 0] = _ptr(self._names) + np.arange(size, dtype=np.uint64) * 16
        msgs[:, 2] = _ptr(iov) + np.arange(size, dtype=np.uint64) * 16
        msgs[:, 3] = 1
        self._msgs = msgs
        self._msgs_ptr = _ptr(msgs)
        words = msgs.view(np.uint32)
        self._namelen = words[:, 2]  # msg_namelen: in/out, reset before every call
        #: Length of each received datagram (msg_len).
        self.lengths = words[:, 14]
        #: msg_flags of each received datagram (MSG_TRUNC: longer than a slot).
        self.flags = words[:, 12]
        #: Source address of each received datagram, host order.
        self.src_ip = self._names[:, 4:8].view(">u4")[:, 0]
        self.src_port = self._names[:, 2:4].view(">u2")[:, 0]
        # Send side: one header and one iovec per message, pointing into ``data``.
        self._siov = np.zeros((size, 2), dtype=np.uint64)
        smsgs = np.zeros((size, 8), dtype=np.uint64)
        smsgs[:, 1] = 16
        smsgs[:, 2] = _ptr(self._siov) + np.arange(size, dtype=np.uint64) * 16
        smsgs[:, 3] = 1
        self._smsgs = smsgs
        self._smsgs_ptr = _ptr(smsgs)
        self._slot_ptrs = iov[:, 0].copy()  # address of each receive slot

    def recv(self, fd: int) -> int:
        """Read up to ``size`` datagrams without blocking; 0 when none is waiting.

        Errors other than "nothing to read" are returned as 0 as well: on an unconnected UDP
        socket they are transient (an interrupted call, memory pressure) and the socket stays
        readable if anything is left.
        """
        self._namelen[:] = 16
        assert _recvmmsg is not None
        n = int(_recvmmsg(fd, self._msgs_ptr, self.size, _MSG_DONTWAIT, None))
        return n if n > 0 else 0

    def send(self, fd: int, index: NDArray[np.intp], names: NDArray[np.uint8],
             dest: NDArray[np.intp]) -> tuple[int, list[int]]:
        """Send the received datagrams ``index`` to ``names[dest]`` (rows of ``sockaddr_in``).

        Returns ``(done, failed)``: messages ``[0, done)`` were handed to the kernel except
        those at the positions in ``failed`` (refused one by one: an unreachable or forbidden
        address); the rest, ``[done, count)``, found the socket buffer full and are dropped,
        since RTP is real-time and queueing would only delay the later packets.
        """
        count = len(index)
        failed: list[int] = []
        if count == 0:
            return 0, failed
        assert _sendmmsg is not None
        smsgs = self._smsgs
        smsgs[:count, 0] = dest.astype(np.uint64) * np.uint64(16) + np.uint64(_ptr(names))
        siov = self._siov
        siov[:count, 0] = self._slot_ptrs[index]
        siov[:count, 1] = self.lengths[index]
        done = 0
        base = self._smsgs_ptr
        for _ in range(count):  # bounded: every round sends or skips at least one message
            n = int(_sendmmsg(fd, base + done * _HDR, count - done, _MSG_DONTWAIT))
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue  # a signal: send the rest again (bounded by the loop)
                if err in (errno.EAGAIN, errno.ENOBUFS):
                    break
                failed.append(done)  # this one message is refused; go on after it
                n = 1
            done += n
            if done >= count:
                break
        return done, failed
