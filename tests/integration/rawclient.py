"""A minimal scripted SIP client for wire-level tests (UDP or TCP), answering digest challenges.

Real softphones and SIPp cover the normal paths; this client covers what they cannot script:
exact headers, keep-alives, outbound flows, replays.
"""

from __future__ import annotations

import socket
import time
import uuid

from sip.digest import answer_challenge, choose_challenge
from sip.message import Request, Response, parse
from sip.stream import Frame, KeepAlive, StreamFramer


class RawClient:
    def __init__(self, pbx_port: int, transport: str = "udp") -> None:
        self.transport = transport
        self.server = ("127.0.0.1", pbx_port)
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.create_connection(self.server, timeout=3)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.framer = StreamFramer()
        self.pongs = 0
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.cseq = 0
        self._pending: list[Request | Response] = []

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def recv(self, timeout: float = 3.0) -> Request | Response | None:
        if self._pending:
            return self._pending.pop(0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            if self.transport == "udp":
                return parse(data)
            if not data:
                return None
            for ev in self.framer.feed(data):
                if isinstance(ev, Frame):
                    self._pending.append(parse(ev.data, stream=True))
                elif isinstance(ev, KeepAlive):
                    pass
            if data == b"\r\n":
                self.pongs += 1
            if self._pending:
                return self._pending.pop(0)
        return None

    def request(self, method: str, user: str, *, headers: dict[str, str] | None = None,
                contact_params: str = "", expires: int | None = 300) -> Request:
        self.cseq += 1
        t = self.transport.upper()
        lines = [
            f"{method} sip:pbx.test SIP/2.0" if method == "REGISTER"
            else f"{method} sip:{user}@pbx.test SIP/2.0",
            f"Via: SIP/2.0/{t} 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@pbx.test>;tag={self.tag}",
            f"To: <sip:{user}@pbx.test>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{user}@127.0.0.1:{self.port};transport={self.transport}>"
            + contact_params,
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        return parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())  # type: ignore[return-value]

    def send(self, req: Request) -> None:
        self.send_raw(bytes(req))

    def final(self, timeout: float = 3.0) -> Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(deadline - time.monotonic())
            if isinstance(msg, Response) and msg.status >= 200:
                return msg
        raise AssertionError("no final response")

    def register(self, user: str, password: str, **kw: object) -> Response:
        req = self.request("REGISTER", user, **kw)  # type: ignore[arg-type]
        self.send(req)
        resp = self.final()
        if resp.status != 401:
            return resp
        challenge = choose_challenge(resp.headers.get_all("WWW-Authenticate"))
        assert challenge is not None
        req = self.request("REGISTER", user, **kw)  # type: ignore[arg-type]
        req.headers.add("Authorization", answer_challenge(
            challenge, "REGISTER", "sip:pbx.test", user, password, uuid.uuid4().hex[:8], 1))
        self.send(req)
        return self.final()
