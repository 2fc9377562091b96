"""Prompt speech with espeak-ng: real rendering, caching, and clear errors for bad languages."""

from __future__ import annotations

import shutil
import stat
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from media.tones import SAMPLE_RATE
from media.tts import JA_MISSING, TextToSpeech, TtsError

ESPEAK = shutil.which("espeak-ng")
@pytest.fixture
def _espeak_installed() -> None:
    if ESPEAK is None:
        pytest.fail("espeak-ng is needed for text-to-speech: apt-get install espeak-ng")


needs_espeak = pytest.mark.usefixtures("_espeak_installed")


def counting_espeak(tmp_path: Path) -> tuple[str, Path]:
    """A wrapper around the real espeak-ng that logs each synthesis run to a file."""
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "espeak-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *" -w "*) echo run >> "{log}";; esac\nexec "{ESPEAK}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper), log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def read_wav(path: Path) -> tuple[NDArray[np.int16], int]:
    data, rate = sf.read(str(path), dtype="int16")
    return data, int(rate)


@needs_espeak
def test_renders_english_speech_as_8khz_mono(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    path = tts.render("Thank you for calling. Please hold while we connect you.")
    assert path.parent == tmp_path / "cache"
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    audio, _ = read_wav(path)
    assert len(audio) / SAMPLE_RATE > 0.5
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 300  # speech, not silence


@needs_espeak
def test_second_render_is_served_from_the_cache(tmp_path: Path) -> None:
    wrapper, log = counting_espeak(tmp_path)
    tts = TextToSpeech(tmp_path / "cache", espeak=wrapper)
    first = tts.render("Your call is important to us.")
    assert runs(log) == 1
    mtime = first.stat().st_mtime_ns
    again = TextToSpeech(tmp_path / "cache", espeak=wrapper).render("Your call is important to us.")
    assert again == first and first.stat().st_mtime_ns == mtime
    assert runs(log) == 1
    # Language, voice and text are all part of the key.
    assert tts.render("Your call is important to us.", lang="en-us") != first
    assert tts.render("Your call is important to us.", voice="en-gb") != first
    assert tts.render("Your call is very important to us.") != first
    assert runs(log) == 4
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


@needs_espeak
def test_text_is_an_argument_not_options_or_shell(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path)
    path = tts.render("-v xx --voices; $(touch pwned) hello")
    audio, _ = read_wav(path)
    assert len(audio) / SAMPLE_RATE > 0.5
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@needs_espeak
def test_languages_and_voices(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path)
    languages = tts.available_languages()
    assert {"en", "en-us", "de", "fr"} <= languages
    german, _ = read_wav(tts.render("Bitte warten.", lang="de"))
    assert len(german) > 0.3 * SAMPLE_RATE
    tts.render("Please hold.", voice="en-us+f3")  # variants are accepted
    with pytest.raises(TtsError, match="no text-to-speech voice for language 'xx'"):
        tts.render("hello", lang="xx")
    with pytest.raises(TtsError, match="no voice 'no-such-voice'") as bad_voice:
        tts.render("hello", voice="no-such-voice")
    assert bad_voice.value.subject == "voice"


@needs_espeak
def test_an_unknown_language_names_the_setting_and_suggests_a_close_one(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path)
    with pytest.raises(TtsError) as typo:
        tts.render("hello", lang="en-uss")
    assert typo.value.subject == "language"
    message = str(typo.value)
    assert message.startswith("no text-to-speech voice for language 'en-uss'; did you mean ")
    assert "en-us" in message.split("did you mean ", 1)[1]
    with pytest.raises(TtsError) as unknown:
        tts.render("hello", lang="qq-zz-zz")
    # No list of every installed language (over a hundred): where to look instead.
    assert str(unknown.value) == (
        "no text-to-speech voice for language 'qq-zz-zz'; "
        "`espeak-ng --voices` lists the installed ones"
    )
    assert not list(tmp_path.glob("*.wav"))


def test_japanese_without_the_extra_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyopenjtalk", None)  # makes `import pyopenjtalk` fail
    tts = TextToSpeech(tmp_path)
    with pytest.raises(TtsError) as info:
        tts.render("お電話ありがとうございます", lang="ja")
    assert str(info.value) == JA_MISSING
    assert "pip install pyopenjtalk-plus" in str(info.value)
    if ESPEAK is not None:
        assert "ja" not in tts.available_languages()  # espeak-ng cannot read kanji


def test_japanese_goes_through_pyopenjtalk_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_tts(text: str) -> tuple[NDArray[np.float64], int]:
        calls.append(text)
        t = np.arange(48000) / 48000
        wave: NDArray[np.float64] = 8000.0 * np.sin(2 * np.pi * 500 * t)  # int16 scale
        return wave, 48000

    module = types.ModuleType("pyopenjtalk")
    module.tts = fake_tts  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyopenjtalk", module)
    tts = TextToSpeech(tmp_path, espeak=str(tmp_path / "no-espeak"))
    path = tts.render("お電話ありがとうございます", lang="ja")
    audio, rate = read_wav(path)
    assert rate == SAMPLE_RATE and abs(len(audio) - SAMPLE_RATE) <= 2
    assert abs(int(np.abs(audio).max()) - 8000) < 100
    assert tts.render("お電話ありがとうございます", lang="ja") == path
    assert calls == ["お電話ありがとうございます"]
    with pytest.raises(TtsError, match="single voice"):
        tts.render("はい", lang="ja", voice="mei")


def test_missing_engine_slow_engine_and_bad_text(tmp_path: Path) -> None:
    with pytest.raises(TtsError, match="not installed"):
        TextToSpeech(tmp_path, espeak=str(tmp_path / "absent")).render("hello")
    with pytest.raises(TtsError, match="empty"):
        TextToSpeech(tmp_path).render("   ")
    with pytest.raises(TtsError, match="more than"):
        TextToSpeech(tmp_path).render("a" * 5000)
    slow = tmp_path / "slow-espeak"
    slow.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--voices" ]; then\n'
        '  echo "Pty Language Age/Gender VoiceName File Other Languages"\n'
        '  echo " 2  en-us --/M English_(America) gmw/en-US (en 3)"\n'
        "  exit 0\n"
        "fi\n"
        "exec sleep 30\n"
    )
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(TtsError, match=r"did not finish within 0\.5 s"):
        TextToSpeech(tmp_path / "c", espeak=str(slow), timeout=0.5).render("hello")
    assert not list((tmp_path / "c").glob("*.wav"))  # nothing half-written is cached
