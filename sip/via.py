"""The Via header (RFC 3261 20.42) and the branch magic cookie (RFC 3261 8.1.1.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .headers import format_params, parse_params

MAGIC_COOKIE: Final = "z9hG4bK"


@dataclass(slots=True)
class Via:
    transport: str  # upper case: UDP, TCP, TLS, WS, WSS, SCTP or any token (RFC 4475 "transports")
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rfc3261_branch(self) -> bool:
        b = self.params.get("branch")
        return b is not None and b.startswith(MAGIC_COOKIE)

    def sent_by(self) -> tuple[str, int | None]:
        return self.host.lower(), self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm. LWS around ``/`` and ``;`` is allowed (RFC 4475 "wsinv")."""
        proto, semi, ptext = text.partition(";")
        parts = proto.split("/", 2)
        if len(parts) != 3:
            raise ValueError(f"bad Via {text!r}")
        name, version = parts[0].strip(" \t"), parts[1].strip(" \t")
        rest = parts[2].strip(" \t").split(None, 1)
        if name.upper() != "SIP" or version != "2.0" or len(rest) != 2:
            raise ValueError(f"bad Via sent-protocol {text!r}")
        transport = rest[0].upper()
        hostport = rest[1].strip(" \t")
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ValueError(f"bad Via host {text!r}")
            host, tail = hostport[: end + 1], hostport[end + 1 :].strip(" \t")
        else:
            host, _, tail = hostport.partition(":")
            tail = (":" + tail) if _ else ""
            host = host.strip(" \t")
        if tail:
            ptxt = tail[1:].strip(" \t")
            if tail[0] != ":" or not ptxt.isdigit() or len(ptxt) > 5 or int(ptxt) > 65535:
                raise ValueError(f"bad Via port {text!r}")
            port = int(ptxt)
        if not host or any(c in " \t,\"<>" for c in host):
            raise ValueError(f"bad Via host {text!r}")
        params = parse_params(ptext, "Via") if semi else {}
        return cls(transport, host, port, params)
