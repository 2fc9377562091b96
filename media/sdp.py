"""SDP (RFC 8866, formerly RFC 4566) parsing and the offer/answer rewrites the B2BUA needs.

Theory of operation: a :class:`SessionDescription` keeps every line of the SDP it was parsed
from, in order, as :class:`SdpLine` objects (session-level lines, then one :class:`MediaSection`
per ``m=`` line). Typed views (:class:`Origin`, :class:`Connection`, :class:`RtpMap`, ...) are
derived from those lines on demand. Because nothing is re-formatted unless it is changed,
``bytes(SessionDescription.parse(data))`` reproduces every line exactly; only the line ends are
normalised to CRLF (RFC 8866 5), and blank lines are dropped.

:meth:`SessionDescription.parse` validates every line the typed views rely on, so the views never
raise on a parsed description. Any problem is reported as :class:`SdpError` (a ``ValueError``)
naming the line; no other exception escapes ``parse`` for any input.

The PBX anchors media: on each leg it is the originator of the SDP (RFC 3264 5), so
:func:`rewrite_for_anchor` replaces the peer's addresses with the relay's, and
:func:`audio_endpoint` / :func:`direction` tell the caller where the peer wants RTP and whether
the call is on hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIRECTIONS",
    "Attribute",
    "Connection",
    "MediaSection",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SdpError",
    "SdpLine",
    "SessionDescription",
    "audio_answer",
    "audio_endpoint",
    "direction",
    "rewrite_for_anchor",
    "with_direction",
]

#: The media direction attributes of RFC 3264 5.1 / RFC 8866 6.7.
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")

# Attributes that only make sense to the endpoint that wrote them once media is anchored:
# ICE (RFC 8839 5) and RTCP multiplexing (RFC 5761 5.1.1; the relay uses port+1 for RTCP).
_ICE_ATTRIBUTES: Final = frozenset({"candidate", "remote-candidates", "end-of-candidates"})
_DROPPED_WHEN_ANCHORED: Final = frozenset({"rtcp-mux"})

# RFC 3264 8.4: the legacy (RFC 2543) hold address.
_UNSPECIFIED: Final = frozenset({"0.0.0.0", "::"})


class SdpError(ValueError):
    """The SDP is malformed, or a rewrite was asked with bad arguments."""


def _parse_port(text: str) -> int | None:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        return None
    port = int(text)
    return port if port <= 65535 else None


def _addrtype_for(address: str) -> str:
    # A literal IPv6 address always contains a colon; IPv4 literals and host names never do.
    return "IP6" if ":" in address else "IP4"


@dataclass(frozen=True, slots=True)
class SdpLine:
    """One ``<type>=<value>`` line, exactly as received (without the line end)."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line (RFC 8866 5.2)."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an ``o=`` line."""
        parts = value.split()
        if len(parts) != 6 or not all(p.isdigit() and p.isascii() for p in parts[1:3]):
            raise SdpError(
                "bad o= line: expected '<username> <sess-id> <sess-version> "
                f"<nettype> <addrtype> <address>', got {value!r}"
            )
        return cls(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """The ``c=`` line (RFC 8866 5.7). ``address`` may carry a multicast ``/ttl`` suffix."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a ``c=`` line."""
        parts = value.split()
        if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
            raise SdpError(f"bad c= line: expected 'IN IP4|IP6 <address>', got {value!r}")
        return cls(parts[0], parts[1], parts[2])

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4 <address>``, or ``IN IP6 <address>`` for an IPv6 literal."""
        return cls("IN", _addrtype_for(address), address)

    @property
    def host(self) -> str:
        """The address without any ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_unspecified(self) -> bool:
        """True for ``0.0.0.0`` (or ``::``), the legacy hold address of RFC 3264 8.4."""
        return self.host in _UNSPECIFIED

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """An ``a=`` line (RFC 8866 5.13): a property (``value is None``) or ``name:value``."""

    name: str
    value: str | None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        """Parse the value of an ``a=`` line."""
        name, sep, value = text.partition(":")
        return cls(name.strip(), value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An ``a=rtpmap:`` attribute (RFC 8866 6.6), e.g. ``101 telephone-event/8000``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """Parse the value of an ``a=rtpmap:`` attribute (the part after the colon)."""
        parts = value.split()
        error = SdpError(f"bad a=rtpmap: expected '<pt> <encoding>/<clock>[/<channels>]', "
                         f"got {value!r}")
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
            raise error
        pt = int(parts[0])
        fields = parts[1].split("/")
        if pt > 127 or len(fields) not in (2, 3) or not fields[0]:
            raise error
        if not all(f.isdigit() and f.isascii() and len(f) <= 10 for f in fields[1:]):
            raise error
        channels = int(fields[2]) if len(fields) == 3 else None
        return cls(pt, fields[0], int(fields[1]), channels)

    def __str__(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """An ``a=rtcp:`` attribute (RFC 3605): the RTCP port, and optionally its address."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        """Parse the value of an ``a=rtcp:`` attribute (the part after the colon)."""
        parts = value.split()
        port = _parse_port(parts[0]) if parts else None
        if port is None or len(parts) not in (1, 4):
            raise SdpError(f"bad a=rtcp: expected '<port> [IN IP4|IP6 <address>]', got {value!r}")
        connection = Connection.parse(" ".join(parts[1:])) if len(parts) == 4 else None
        return cls(port, connection)

    def __str__(self) -> str:
        return str(self.port) if self.connection is None else f"{self.port} {self.connection}"


def _attributes(lines: Iterable[SdpLine]) -> tuple[Attribute, ...]:
    return tuple(Attribute.parse(line.value) for line in lines if line.kind == "a")


def _direction_of(attributes: Iterable[Attribute]) -> str | None:
    for attribute in attributes:
        if attribute.value is None and attribute.name in DIRECTIONS:
            return attribute.name
    return None


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One media description: its ``m=`` line (``lines[0]``) and the lines that follow it."""

    lines: tuple[SdpLine, ...]

    def _m_fields(self) -> list[str]:
        return self.lines[0].value.split()

    @property
    def media(self) -> str:
        """The media type: ``audio``, ``video``, ``application``, ..."""
        return self._m_fields()[0]

    @property
    def port(self) -> int:
        """The transport port; 0 means the stream is rejected or disabled (RFC 3264 6)."""
        return int(self._m_fields()[1].split("/", 1)[0])

    @property
    def proto(self) -> str:
        """The transport protocol, e.g. ``RTP/AVP`` or ``RTP/SAVP``."""
        return self._m_fields()[2]

    @property
    def formats(self) -> tuple[str, ...]:
        """The media formats (RTP payload types for RTP profiles), in preference order."""
        return tuple(self._m_fields()[3:])

    @property
    def connection(self) -> Connection | None:
        """The media-level ``c=`` line, if any (it overrides the session-level one)."""
        for line in self.lines:
            if line.kind == "c":
                return Connection.parse(line.value)
        return None

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """All media-level ``a=`` lines, in order."""
        return _attributes(self.lines)

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=<name>:<value>``; ``""`` for a bare property."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None

    @property
    def rtpmaps(self) -> tuple[RtpMap, ...]:
        """The ``a=rtpmap:`` attributes, in order."""
        return tuple(
            RtpMap.parse(a.value) for a in self.attributes if a.name == "rtpmap" and a.value
        )

    def fmtp(self, payload_type: int) -> str | None:
        """The format parameters of ``a=fmtp:<payload_type>``, e.g. ``0-16``."""
        for attribute in self.attributes:
            if attribute.name == "fmtp" and attribute.value is not None:
                fmt, _, params = attribute.value.partition(" ")
                if fmt == str(payload_type):
                    return params.strip()
        return None

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds; None when absent or not a whole number."""
        value = self.attribute("ptime")
        if value is None:
            return None
        value = value.strip()
        return int(value) if value.isdigit() and value.isascii() and len(value) < 6 else None

    @property
    def direction(self) -> str | None:
        """The media-level direction attribute, or None when the section has none."""
        return _direction_of(self.attributes)

    @property
    def rtcp(self) -> RtcpAttribute | None:
        """The ``a=rtcp:`` attribute (RFC 3605), if any."""
        value = self.attribute("rtcp")
        return None if value is None else RtcpAttribute.parse(value)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body: session-level lines and media sections, all kept verbatim."""

    session: tuple[SdpLine, ...]
    media: tuple[MediaSection, ...]

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse an SDP body. Raises :class:`SdpError` (never anything else) on bad input."""
        return _parse(data)

    def __bytes__(self) -> bytes:
        lines = [str(line) for line in self.session]
        for section in self.media:
            lines.extend(str(line) for line in section.lines)
        # RFC 8866 5: every line ends with CRLF. surrogateescape returns undecodable bytes as-is.
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")

    @property
    def origin(self) -> Origin:
        """The ``o=`` line."""
        for line in self.session:
            if line.kind == "o":
                return Origin.parse(line.value)
        raise SdpError("missing o= line")

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=`` line, if any."""
        for line in self.session:
            if line.kind == "c":
                return Connection.parse(line.value)
        return None

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """The session-level ``a=`` lines, in order."""
        return _attributes(self.session)

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, or None when there is none."""
        return _direction_of(self.attributes)

    def connection_for(self, section: MediaSection) -> Connection | None:
        """The ``c=`` that applies to ``section``: media level, else session level."""
        return section.connection or self.connection

    @property
    def audio(self) -> MediaSection | None:
        """The audio stream the PBX relays: the first ``m=audio`` whose port is not 0."""
        index = _anchored_index(self)
        return None if index is None else self.media[index]


def _parse(data: bytes) -> SessionDescription:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SdpError(f"SDP must be bytes, not {type(data).__name__}")
    # surrogateescape: a non-UTF-8 s= or i= (seen in the wild) must neither fail nor change.
    text = bytes(data).decode("utf-8", "surrogateescape")
    session: list[SdpLine] = []
    sections: list[list[SdpLine]] = []
    m_linenos: list[int] = []
    origin_seen = False
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        kind = line[0]
        if len(line) < 2 or line[1] != "=" or not ("a" <= kind <= "z"):
            raise SdpError(f"line {lineno}: expected '<type>=<value>', got {line[:40]!r}")
        value = line[2:]
        if "\x00" in value or "\r" in value:
            raise SdpError(f"line {lineno}: control character in {kind}= line")
        if not session and kind != "v":
            raise SdpError(f"line {lineno}: SDP must start with v=0")
        try:
            _check_line(kind, value, in_media=bool(sections))
        except SdpError as exc:
            raise SdpError(f"line {lineno}: {exc}") from None
        if kind == "o":
            if origin_seen:
                raise SdpError(f"line {lineno}: duplicate o= line")
            origin_seen = True
        if kind == "v" and session:
            raise SdpError(f"line {lineno}: duplicate v= line")
        if kind == "m":
            sections.append([SdpLine(kind, value)])
            m_linenos.append(lineno)
        elif sections:
            sections[-1].append(SdpLine(kind, value))
        else:
            session.append(SdpLine(kind, value))
    if not session:
        raise SdpError("empty SDP")
    if not origin_seen:
        raise SdpError("missing o= line")
    has_session_c = any(line.kind == "c" for line in session)
    media = tuple(MediaSection(tuple(lines)) for lines in sections)
    for lineno, section in zip(m_linenos, media, strict=True):
        # RFC 8866 5.7: every media section needs a c= line, at media or session level. A
        # disabled stream (port 0) carries no media, so a missing c= there is tolerated.
        if section.port != 0 and not has_session_c and section.connection is None:
            raise SdpError(
                f"line {lineno}: m={section.media} stream has no c= line "
                "at session or media level"
            )
    return SessionDescription(tuple(session), media)


def _check_line(kind: str, value: str, *, in_media: bool) -> None:
    """Validate the lines that the typed views parse, so that the views never raise."""
    if kind == "v":
        if in_media:
            raise SdpError("v= not allowed in a media section")
        if value.strip() != "0":
            raise SdpError(f"unsupported SDP version {value!r} (only v=0 exists)")
    elif kind == "o":
        if in_media:
            raise SdpError("o= not allowed in a media section")
        Origin.parse(value)
    elif kind == "c":
        Connection.parse(value)
    elif kind == "m":
        fields = value.split()
        port, _, count = fields[1].partition("/") if len(fields) > 1 else ("", "", "")
        if (
            len(fields) < 3
            or _parse_port(port) is None
            or (count and not (count.isdigit() and count.isascii() and len(count) < 6))
        ):
            raise SdpError(
                f"bad m= line: expected '<media> <port>[/<count>] <proto> <fmt> ...', "
                f"got {value!r}"
            )
    elif kind == "a":
        attribute = Attribute.parse(value)
        if attribute.name == "rtpmap":
            RtpMap.parse(attribute.value or "")
        elif attribute.name == "rtcp":
            RtcpAttribute.parse(attribute.value or "")
        elif attribute.name == "fmtp" and not (attribute.value or "").strip():
            raise SdpError("bad a=fmtp: expected '<format> <parameters>'")


def _anchored_index(sd: SessionDescription) -> int | None:
    # RFC 3264 8: a stream is never removed from a re-offer, only disabled with port 0 and a
    # new m= line appended; so the live audio stream is the first one that is not disabled.
    for index, section in enumerate(sd.media):
        if section.media == "audio" and section.port != 0:
            return index
    return None


def audio_endpoint(sd: SessionDescription) -> tuple[str, int] | None:
    """Where the peer wants to receive RTP: ``(address, port)`` of its audio stream.

    The media-level ``c=`` overrides the session-level one. Returns None when there is no audio
    stream, when it is rejected (port 0), or when its address is ``0.0.0.0`` / ``::`` (legacy
    hold, RFC 3264 8.4: there is nowhere to send to).
    """
    index = _anchored_index(sd)
    if index is None:
        return None
    section = sd.media[index]
    connection = sd.connection_for(section)
    if connection is None or connection.is_unspecified:
        return None
    return connection.host, section.port


def direction(sd: SessionDescription) -> str:
    """The direction of the audio stream, from the point of view of the SDP's writer.

    A media-level attribute overrides a session-level one; the default is ``sendrecv``
    (RFC 3264 5.1). A ``c=0.0.0.0`` hold (RFC 3264 8.4) means "do not send to me", so it removes
    the receive half: ``sendrecv`` becomes ``sendonly`` and ``recvonly`` becomes ``inactive``.
    Without a live audio stream the answer is ``inactive``.
    """
    index = _anchored_index(sd)
    if index is None:
        return "inactive"
    section = sd.media[index]
    value = section.direction or sd.direction or "sendrecv"
    connection = sd.connection_for(section)
    if connection is not None and connection.is_unspecified:
        value = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(value, value)
    return value


def _is_ice(attribute: Attribute) -> bool:
    return attribute.name in _ICE_ATTRIBUTES or attribute.name.startswith("ice-")


def _rewrite_m_line(value: str, port: int) -> str:
    fields = value.split()
    # A port count (m=audio 49170/2) describes layered multicast; the relay has one port pair.
    return " ".join([fields[0], str(port), *fields[2:]])


def rewrite_for_anchor(
    sd: SessionDescription,
    address: str,
    port: int,
    session_id: int,
    version: int,
    *,
    username: str = "-",
) -> SessionDescription:
    """A copy of ``sd`` that points the other leg's peer at the PBX's RTP relay.

    - ``o=`` becomes ``<username> <session_id> <version> IN IP4|IP6 <address>``: the PBX is the
      originator on each leg, and the caller must raise ``version`` by one whenever the SDP it
      sends on that leg changes (RFC 3264 8).
    - Every ``c=`` line becomes ``IN IP4 <address>`` (``IP6`` for an IPv6 address).
    - The live audio stream (see :attr:`SessionDescription.audio`) gets ``port``; its ``a=rtcp``
      becomes ``port + 1``, which is where the relay listens for RTCP.
    - ICE attributes (``a=candidate``, ``a=ice-*``, ...) and ``a=rtcp-mux`` are removed: the
      relay is the media endpoint now, with RTCP on its own port.
    - Codecs, ``a=rtpmap``/``a=fmtp`` (including RFC 4733 ``telephone-event``), ``a=ptime`` and
      direction attributes pass through unchanged, so hold and DTMF reach the other side. A
      legacy ``c=0.0.0.0`` hold becomes the equivalent direction attribute (RFC 3264 8.4).
    - Every other stream (video, a second audio stream, ...) is disabled with port 0: the relay
      only carries one audio stream. A rejected audio stream stays rejected.
    """
    if not address or any(ch.isspace() for ch in address) or "/" in address:
        raise SdpError(f"bad relay address {address!r}")
    if not 1 <= port <= 65534:
        raise SdpError(f"bad relay port {port} (need 1..65534: RTCP uses port + 1)")
    if session_id < 0 or version < 0:
        raise SdpError("session id and version must not be negative")
    if not username or any(ch.isspace() for ch in username):
        raise SdpError(f"bad o= username {username!r}")
    connection = str(Connection.for_address(address))
    origin = Origin(username, session_id, version, "IN", _addrtype_for(address), address)
    anchored = _anchored_index(sd)

    session: list[SdpLine] = []
    for line in sd.session:
        if line.kind == "o":
            session.append(SdpLine("o", str(origin)))
        elif line.kind == "c":
            session.append(SdpLine("c", connection))
        elif line.kind == "a" and _is_ice(Attribute.parse(line.value)):
            continue
        else:
            session.append(line)

    media: list[MediaSection] = []
    for index, section in enumerate(sd.media):
        live = index == anchored
        legacy_hold = False
        if live:
            effective = sd.connection_for(section)
            legacy_hold = effective is not None and effective.is_unspecified
        lines: list[SdpLine] = [
            SdpLine("m", _rewrite_m_line(section.lines[0].value, port if live else 0))
        ]
        for line in section.lines[1:]:
            if line.kind == "c":
                lines.append(SdpLine("c", connection))
                continue
            if line.kind != "a":
                lines.append(line)
                continue
            attribute = Attribute.parse(line.value)
            if _is_ice(attribute) or attribute.name in _DROPPED_WHEN_ANCHORED:
                continue
            if attribute.name == "rtcp":
                if live:
                    rtcp = RtcpAttribute.parse(attribute.value or "")
                    with_address = Connection.for_address(address) if rtcp.connection else None
                    lines.append(SdpLine("a", f"rtcp:{RtcpAttribute(port + 1, with_address)}"))
                continue
            if legacy_hold and attribute.value is None and attribute.name in DIRECTIONS:
                continue  # replaced below by the explicit equivalent
            lines.append(line)
        if legacy_hold:
            # RFC 3264 8.4: say with an attribute what c=0.0.0.0 said, since c= is now ours.
            lines.append(SdpLine("a", direction(sd)))
        media.append(MediaSection(tuple(lines)))
    return SessionDescription(tuple(session), tuple(media))


def with_direction(sd: SessionDescription, value: str) -> SessionDescription:
    """A copy of ``sd`` whose live audio stream has the direction ``value`` (RFC 3264 6.1).

    Session-level and media-level direction attributes of that stream are replaced by one
    media-level attribute. Used when the PBX re-offers a held party's last SDP to a new party:
    the new media session must not inherit the hold.
    """
    if value not in DIRECTIONS:
        raise SdpError(f"bad direction {value!r}")
    anchored = _anchored_index(sd)
    if anchored is None:
        return sd
    session = tuple(
        line for line in sd.session
        if not (line.kind == "a" and Attribute.parse(line.value).name in DIRECTIONS)
    )
    media: list[MediaSection] = []
    for index, section in enumerate(sd.media):
        if index != anchored:
            media.append(section)
            continue
        lines = [
            line for line in section.lines
            if not (line.kind == "a" and Attribute.parse(line.value).name in DIRECTIONS)
        ]
        lines.append(SdpLine("a", value))
        media.append(MediaSection(tuple(lines)))
    return SessionDescription(session, tuple(media))


def audio_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    session_id: int,
    version: int,
    *,
    codecs: tuple[str, ...] = ("0", "8"),
    ptime: int = 20,
) -> tuple[SessionDescription, int, int | None] | None:
    """The PBX's own answer (RFC 3264 6) to ``offer`` for a leg it terminates itself.

    Picks the first of the offer's audio formats that is in ``codecs`` (static payload types,
    RFC 3551 6), and telephone-event (RFC 4733 7.1.1) at 8000 Hz when offered. Returns the
    answer, the chosen payload type and the telephone-event one (or None); None when the offer
    has no live audio stream with an acceptable codec (the caller answers 488). Other streams
    are rejected with port 0 (RFC 3264 6). The answer's direction mirrors the offer's: a
    ``sendonly`` offer (the phone holds) gets ``recvonly``, and so on.
    """
    anchored = _anchored_index(offer)
    if anchored is None:
        return None
    audio = offer.media[anchored]
    chosen = next((f for f in audio.formats if f in codecs), None)
    if chosen is None:
        return None
    event = next(
        (m.payload_type for m in audio.rtpmaps
         if m.encoding.lower() == "telephone-event" and m.clock_rate == 8000),
        None,
    )
    kind = _addrtype_for(address)
    offered = direction(offer)
    answer_dir = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)
    names = {"0": "PCMU/8000", "8": "PCMA/8000"}
    formats = [chosen] + ([str(event)] if event is not None else [])
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {kind} {address}",
        "s=-",
        f"c=IN {kind} {address}",
        "t=0 0",
    ]
    for index, section in enumerate(offer.media):
        if index != anchored:
            fields = section.lines[0].value.split()
            lines.append(" ".join(["m=" + fields[0], "0", *fields[2:]]))
            continue
        lines.append(f"m=audio {port} {audio.proto} {' '.join(formats)}")
        lines.append(f"a=rtpmap:{chosen} {names.get(chosen, chosen)}")
        if event is not None:
            lines.append(f"a=rtpmap:{event} telephone-event/8000")
            lines.append(f"a=fmtp:{event} 0-16")
        lines.append(f"a=ptime:{ptime}")
        lines.append(f"a={answer_dir}")
    body = ("\r\n".join(lines) + "\r\n").encode()
    return SessionDescription.parse(body), int(chosen), event
