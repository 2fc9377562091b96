"""µ-law ↔ A-law between the legs of a call (ITU-T G.711 both ways), sans-I/O.

When one phone speaks only PCMU and the other only PCMA, the offer to the callee lists both,
the caller's answer is put back in its own codec, and the relay converts every RTP packet with a
256-byte table (``bytes.translate``: one C-level pass, no decode/encode) and its payload type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from .g711 import transcode_alaw_to_ulaw, transcode_ulaw_to_alaw
from .sdp import MediaSection, SdpLine, SessionDescription

ULAW_TO_ALAW: Final = transcode_ulaw_to_alaw(bytes(range(256)))
ALAW_TO_ULAW: Final = transcode_alaw_to_ulaw(bytes(range(256)))
_G711: Final = {"0": "PCMU/8000", "8": "PCMA/8000"}


@dataclass(frozen=True, slots=True)
class Transcoding:
    """Rewrite packets of payload type ``pt_from`` to ``pt_to`` through ``table``."""

    pt_from: int
    pt_to: int
    table: bytes

    @classmethod
    def between(cls, pt_from: int, pt_to: int) -> Transcoding:
        table = ULAW_TO_ALAW if (pt_from, pt_to) == (0, 8) else ALAW_TO_ULAW
        return cls(pt_from, pt_to, table)


def transcode_rtp(data: bytes, x: Transcoding) -> bytes:
    """The packet converted; packets of other payload types (telephone-events) unchanged."""
    if len(data) < 12 or (data[1] & 0x7F) != x.pt_from:
        return data
    first = data[0]
    header = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(data) >= header + 4:  # RFC 3550 5.3.1 header extension
        header += 4 + 4 * int.from_bytes(data[header + 2 : header + 4], "big")
    end = len(data)
    if first & 0x20 and end > header:  # padding: its last octet counts it (RFC 3550 5.1)
        end -= data[-1]
    if end < header:
        return data
    return b"".join((
        data[:1], bytes(((data[1] & 0x80) | x.pt_to,)), data[2:header],
        data[header:end].translate(x.table), data[end:],
    ))


def _audio(sd: SessionDescription) -> tuple[int, MediaSection] | None:
    for index, section in enumerate(sd.media):
        if section.media == "audio" and section.port != 0:
            return index, section
    return None


def g711_formats(sd: SessionDescription | None) -> list[str]:
    """The G.711 payload types ("0", "8") of the audio stream, in the SDP's order."""
    found = _audio(sd) if sd is not None else None
    return [] if found is None else [f for f in found[1].formats if f in _G711]


def offer_both_g711(sd: SessionDescription) -> SessionDescription:
    """If the offer has one G.711 variant, add the other after the offered formats, so that a
    phone speaking only the other one can still answer (the relay then transcodes)."""
    found = _audio(sd)
    have = g711_formats(sd)
    if found is None or len(have) != 1:
        return sd
    index, section = found
    extra = "8" if have[0] == "0" else "0"
    m = section.lines[0]
    lines = [SdpLine(m.kind, f"{m.value} {extra}")]
    lines += section.lines[1:]
    lines.append(SdpLine("a", f"rtpmap:{extra} {_G711[extra]}"))
    media = list(sd.media)
    media[index] = replace(section, lines=tuple(lines))
    return replace(sd, media=tuple(media))


def rename_format(sd: SessionDescription, old: str, new: str) -> SessionDescription:
    """The SDP with payload type ``old`` renamed ``new`` in the audio m= line and its rtpmap."""
    found = _audio(sd)
    if found is None:
        return sd
    index, section = found
    m = section.lines[0]
    fields = m.value.split()
    fields[3:] = [new if f == old else f for f in fields[3:]]
    lines = [SdpLine(m.kind, " ".join(fields))]
    for line in section.lines[1:]:
        if line.kind == "a" and line.value.startswith(f"rtpmap:{old} "):
            line = SdpLine("a", f"rtpmap:{new} {_G711.get(new, line.value.split(' ', 1)[1])}")
        lines.append(line)
    media = list(sd.media)
    media[index] = replace(section, lines=tuple(lines))
    return replace(sd, media=tuple(media))


def g711_offer(sd: SessionDescription, first: str) -> SessionDescription:
    """A re-offer of ``sd``'s audio stream with G.711 only: ``first`` ("0" or "8"), then the
    other variant, then the telephone-event formats ``sd`` had (RFC 4733), in that order.

    Used when a party already talking in ``first`` is connected to a new phone (a transfer):
    whichever variant the new phone picks, the relay can convert it, and nothing else can be
    picked that the first party's session does not carry.
    """
    if first not in _G711:
        raise ValueError(f"not a G.711 payload type: {first!r}")
    found = _audio(sd)
    if found is None:
        return sd
    index, section = found
    events = [
        m.payload_type for m in section.rtpmaps
        if m.encoding.lower() == "telephone-event" and m.clock_rate == 8000
    ]
    other = "8" if first == "0" else "0"
    formats = [first, other, *(str(pt) for pt in events)]
    m_fields = section.lines[0].value.split()
    lines = [SdpLine("m", " ".join([*m_fields[:3], *formats]))]
    lines += [SdpLine("a", f"rtpmap:{pt} {_G711[pt]}") for pt in (first, other)]
    for line in section.lines[1:]:
        if line.kind == "a" and line.value.split(":", 1)[0] in ("rtpmap", "fmtp"):
            pt = line.value.split(":", 1)[1].split(" ", 1)[0] if ":" in line.value else ""
            if pt not in formats or pt in _G711:
                continue
        lines.append(line)
    media = list(sd.media)
    media[index] = replace(section, lines=tuple(lines))
    return replace(sd, media=tuple(media))
