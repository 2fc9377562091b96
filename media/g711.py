"""G.711 µ-law (PCMU) and A-law (PCMA) codecs as numpy table look-ups.

Theory of operation: G.711 maps each 16-bit linear sample to one 8-bit code and back, sample by
sample, with no state. So the whole codec is four look-up tables built once at import: an encode
table indexed by the 65,536 int16 values (seen as uint16, so a plain fancy index works) and a
256-entry decode table, per law. Encoding a 160-sample frame is then one ``take`` and one
``tobytes``. Transcoding between the laws (a B2BUA bridging a PCMU phone to a PCMA one) is a
256-entry table too: decode with one law, encode with the other, precomputed.

The tables follow the ITU-T G.711 reference (the Sun/CCITT ``g711.c`` segment search): µ-law
works on the 14 most significant bits with a bias of 33, A-law on the 13 most significant bits
with the even bits inverted (0x55). The results are bit-exact with what CPython's ``audioop``
(removed in Python 3.13) produces for 2-byte samples; the tests compare all inputs against it
where it exists.

:class:`Codec` is the seam the rest of :mod:`media` uses; :func:`get_codec` finds one by
encoding name or static RTP payload type (RFC 3551 4.5.14, table 4).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCMA",
    "PCMU",
    "Codec",
    "CodecError",
    "alaw_decode",
    "alaw_encode",
    "get_codec",
    "transcode_alaw_to_ulaw",
    "transcode_ulaw_to_alaw",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]

#: µ-law silence (RFC 3551 4.5.14: code 0xFF decodes to 0).
ULAW_SILENCE: Final = 0xFF
#: A-law silence: code 0xD5 (0x80 ^ 0x55) decodes to +8, the smallest positive step.
ALAW_SILENCE: Final = 0xD5


class CodecError(ValueError):
    """Bad input to a codec, or an unknown codec name / payload type."""


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # G.711 µ-law on 14-bit magnitudes; the int16 input is reduced with an arithmetic shift
    # (floor), as the reference code does.
    linear = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(linear < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(linear), 8159) + 0x21  # clip, then add the bias (0x84 >> 2)
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, magnitude, side="left")
    # Past the last segment (only the clipped maximum, 8159 + 33) the code saturates at 0x7F.
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F))
    return (uval ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> Pcm:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    linear = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    negative = linear < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -linear - 1, linear)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, magnitude, side="left")
    # 13-bit magnitudes never exceed 0xFFF, so seg < 8.
    quant = np.where(seg < 2, magnitude >> 1, magnitude >> np.maximum(seg, 1)) & 0x0F
    return (((seg << 4) | quant) ^ mask).astype(np.uint8)


def _build_alaw_decode() -> Pcm:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & 0x70) >> 4
    t = ((code & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE: Final = _build_ulaw_encode()
_ULAW_DECODE: Final = _build_ulaw_decode()
_ALAW_ENCODE: Final = _build_alaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()
_ULAW_TO_ALAW: Final = _ALAW_ENCODE[_ULAW_DECODE.view(np.uint16)]
_ALAW_TO_ULAW: Final = _ULAW_ENCODE[_ALAW_DECODE.view(np.uint16)]
for _table in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE, _ULAW_TO_ALAW,
               _ALAW_TO_ULAW):
    _table.flags.writeable = False


def _as_index(pcm: Pcm) -> npt.NDArray[np.uint16]:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        raise CodecError(f"expected a numpy int16 array, got {_describe(pcm)}")
    return pcm.reshape(-1).view(np.uint16)


def _describe(value: object) -> str:
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__} of {dtype}" if dtype is not None else type(value).__name__


def _as_codes(data: bytes | bytearray | memoryview) -> npt.NDArray[np.uint8]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    return np.frombuffer(data, dtype=np.uint8)


def ulaw_encode(pcm: Pcm) -> bytes:
    """Encode int16 samples (any shape, read in C order) to µ-law, one byte per sample."""
    return _ULAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """Decode µ-law bytes to a new one-dimensional int16 array."""
    return _ULAW_DECODE[_as_codes(data)]


def alaw_encode(pcm: Pcm) -> bytes:
    """Encode int16 samples (any shape, read in C order) to A-law, one byte per sample."""
    return _ALAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """Decode A-law bytes to a new one-dimensional int16 array."""
    return _ALAW_DECODE[_as_codes(data)]


def transcode_ulaw_to_alaw(data: bytes | bytearray | memoryview) -> bytes:
    """µ-law to A-law, same result as decoding then encoding, in one table look-up."""
    return _ULAW_TO_ALAW[_as_codes(data)].tobytes()


def transcode_alaw_to_ulaw(data: bytes | bytearray | memoryview) -> bytes:
    """A-law to µ-law, same result as decoding then encoding, in one table look-up."""
    return _ALAW_TO_ULAW[_as_codes(data)].tobytes()


class Codec(ABC):
    """An audio codec as the media engine sees it: PCM int16 in, RTP payload bytes out."""

    #: Encoding name as in an SDP ``a=rtpmap`` line (RFC 4566 6), e.g. ``"PCMU"``.
    name: str
    #: RTP clock rate in Hz.
    clock_rate: int
    #: Static RTP payload type (RFC 3551 table 4).
    payload_type: int

    @abstractmethod
    def encode(self, pcm: Pcm) -> bytes:
        """Encode int16 samples to an RTP payload."""

    @abstractmethod
    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        """Decode an RTP payload to int16 samples."""

    def silence(self, samples: int) -> bytes:
        """A payload of ``samples`` samples of silence."""
        return self.encode(np.zeros(samples, dtype=np.int16))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}/{self.clock_rate} pt={self.payload_type}>"


class _Pcmu(Codec):
    name = "PCMU"
    clock_rate = 8000
    payload_type = 0

    def encode(self, pcm: Pcm) -> bytes:
        return ulaw_encode(pcm)

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        return ulaw_decode(payload)


class _Pcma(Codec):
    name = "PCMA"
    clock_rate = 8000
    payload_type = 8

    def encode(self, pcm: Pcm) -> bytes:
        return alaw_encode(pcm)

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        return alaw_decode(payload)


#: The G.711 µ-law codec (static payload type 0).
PCMU: Final[Codec] = _Pcmu()
#: The G.711 A-law codec (static payload type 8).
PCMA: Final[Codec] = _Pcma()

_BY_NAME: Final = {codec.name: codec for codec in (PCMU, PCMA)}
_BY_PT: Final = {codec.payload_type: codec for codec in (PCMU, PCMA)}


def get_codec(name_or_pt: str | int) -> Codec:
    """The codec for an encoding name (case-insensitive, as SDP allows; an optional
    ``/clock-rate`` suffix must be 8000) or a static payload type (0 or 8).

    Raises :class:`CodecError` for anything else.
    """
    if isinstance(name_or_pt, bool):
        raise CodecError(f"unknown codec {name_or_pt!r}")
    if isinstance(name_or_pt, int):
        codec = _BY_PT.get(name_or_pt)
    elif isinstance(name_or_pt, str):
        name, _, rate = name_or_pt.strip().partition("/")
        codec = _BY_NAME.get(name.upper())
        if codec is not None and rate and rate.split("/")[0] != str(codec.clock_rate):
            codec = None
    else:
        codec = None
    if codec is None:
        raise CodecError(f"unknown codec {name_or_pt!r}; supported: PCMU (0), PCMA (8)")
    return codec
