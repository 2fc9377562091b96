"""G.711 tables: bit-exact against CPython's audioop where it exists, silence, the codec seam."""

from __future__ import annotations

import time
import warnings
from types import ModuleType

import numpy as np
import pytest

from media.g711 import (
    PCMA,
    PCMU,
    Codec,
    CodecError,
    alaw_decode,
    alaw_encode,
    get_codec,
    transcode_alaw_to_ulaw,
    transcode_ulaw_to_alaw,
    ulaw_decode,
    ulaw_encode,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop")
    return module


def test_ulaw_encode_matches_audioop_for_every_int16(audioop: ModuleType) -> None:
    assert ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_matches_audioop_for_every_int16(audioop: ModuleType) -> None:
    assert alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_ulaw_decode_matches_audioop_for_every_code(audioop: ModuleType) -> None:
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_matches_audioop_for_every_code(audioop: ModuleType) -> None:
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_transcoding_matches_decode_then_encode(audioop: ModuleType) -> None:
    assert transcode_ulaw_to_alaw(ALL_CODES) == audioop.lin2alaw(
        audioop.ulaw2lin(ALL_CODES, 2), 2
    )
    assert transcode_alaw_to_ulaw(ALL_CODES) == audioop.lin2ulaw(
        audioop.alaw2lin(ALL_CODES, 2), 2
    )


def test_silence_frames() -> None:
    zeros = np.zeros(160, dtype=np.int16)
    assert ulaw_encode(zeros) == b"\xff" * 160
    assert alaw_encode(zeros) == b"\xd5" * 160
    assert PCMU.silence(160) == b"\xff" * 160
    assert PCMA.silence(160) == b"\xd5" * 160
    assert not ulaw_decode(b"\xff" * 160).any()
    assert transcode_ulaw_to_alaw(b"\xff" * 160) == b"\xd5" * 160


def test_decode_returns_int16_and_round_trip_is_stable() -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        decoded = decode(ALL_CODES)
        assert decoded.dtype == np.int16
        assert decoded.shape == (256,)
        # Every code decodes to a value inside its own interval, so re-encoding is lossless
        # (µ-law has two zero codes, 0x7F and 0xFF; both come back as 0xFF).
        assert np.array_equal(decode(encode(decoded)), decoded)


def test_ulaw_and_alaw_known_values() -> None:
    # Full-scale samples: µ-law 0x80 / 0x00, A-law 0xAA / 0x2A (G.711 tables 1a and 2a).
    extremes = np.array([32767, -32768], dtype=np.int16)
    assert ulaw_encode(extremes) == b"\x80\x00"
    assert alaw_encode(extremes) == b"\xaa\x2a"
    assert ulaw_decode(b"\x80\x00").tolist() == [32124, -32124]
    assert alaw_decode(b"\xaa\x2a").tolist() == [32256, -32256]


def test_encode_rejects_wrong_input() -> None:
    with pytest.raises(CodecError, match="int16"):
        ulaw_encode(np.zeros(160, dtype=np.float64))  # type: ignore[arg-type, unused-ignore]
    with pytest.raises(CodecError, match="int16"):
        alaw_encode([0, 1, 2])  # type: ignore[arg-type, unused-ignore]
    with pytest.raises(CodecError, match="bytes"):
        ulaw_decode("ff")  # type: ignore[arg-type]


def test_multidimensional_input_is_read_in_order() -> None:
    frame = np.arange(-800, 800, 10, dtype=np.int16)
    assert ulaw_encode(frame.reshape(2, -1)) == ulaw_encode(frame)


def test_get_codec_by_name_and_payload_type() -> None:
    assert get_codec(0) is PCMU
    assert get_codec(8) is PCMA
    assert get_codec("PCMU") is PCMU
    assert get_codec("pcma/8000") is PCMA
    assert get_codec("PCMA/8000/1") is PCMA
    for codec in (PCMU, PCMA):
        assert isinstance(codec, Codec)
        assert codec.clock_rate == 8000
        assert codec.decode(codec.encode(np.zeros(160, dtype=np.int16))).shape == (160,)
    assert "PCMU" in repr(PCMU)


@pytest.mark.parametrize("bad", [3, 18, "G729", "PCMU/16000", "", True, 1.0])
def test_get_codec_rejects_unknown(bad: object) -> None:
    with pytest.raises(CodecError, match="unknown codec"):
        get_codec(bad)  # type: ignore[arg-type]


def test_frame_timing_is_reported() -> None:
    """Encode/decode cost per 160-sample frame (printed with -s; bounded generously)."""
    rng = np.random.default_rng(1)
    frame = rng.integers(-32768, 32768, 160, dtype=np.int16)
    payload = ulaw_encode(frame)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        ulaw_encode(frame)
    encode_us = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        ulaw_decode(payload)
    decode_us = (time.perf_counter() - start) / rounds * 1e6
    print(f"\nG.711 µ-law, 160 samples: encode {encode_us:.2f} µs, decode {decode_us:.2f} µs")
    assert encode_us < 500 and decode_us < 500
