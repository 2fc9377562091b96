"""Text to speech for prompts, rendered once to 8 kHz mono WAV files and cached.

Engines (nothing is downloaded at run time):

- ``espeak-ng`` (Debian package ``espeak-ng``) for every language it has a voice for. It runs
  as a subprocess with the text as one argv element (never through a shell) and a bounded
  timeout.
- ``pyopenjtalk`` for Japanese (``lang="ja"``), only when the optional ``ja`` extra is
  installed (``pip install pyopenjtalk-plus``, about 340 MB with its dictionary and voice):
  espeak-ng cannot read kanji, so Japanese is never sent to it.

Rendered prompts are cached under ``cache_dir`` by a hash of (engine, language, voice, text), so
each prompt is synthesised once. Blocking: call :meth:`TextToSpeech.render` from a worker thread.
A language or voice that no engine can speak raises :class:`TtsError`; it is a configuration
mistake to report, not something to replace with silence.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]

from media.sources import AudioError, load_audio, to_engine_audio
from media.tones import SAMPLE_RATE, Frame

JA_MISSING = "Japanese needs the optional 'ja' extra: pip install pyopenjtalk-plus"
"""Message of the :class:`TtsError` raised for ``lang="ja"`` without pyopenjtalk."""
MAX_TEXT_CHARS = 4000
"""Longest prompt text accepted (several minutes of speech)."""

_ESPEAK_ENGINE = "espeak-ng"
_JA_ENGINE = "pyopenjtalk"


class TtsError(Exception):
    """Speech cannot be rendered: unknown language or voice, missing engine, engine failure.

    ``subject`` is ``"language"`` or ``"voice"`` when that setting is what cannot be spoken
    (so a caller can point at the right configuration key), else ``None``.
    """

    def __init__(self, message: str, subject: str | None = None) -> None:
        super().__init__(message)
        self.subject = subject


class TextToSpeech:
    """Renders prompt text to cached 8 kHz mono int16 WAV files.

    ``espeak`` is the espeak-ng executable (a name looked up on PATH, or a path);
    ``timeout`` bounds each synthesis run in seconds.
    """

    def __init__(
        self, cache_dir: Path | str, espeak: str = "espeak-ng", timeout: float = 20.0
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._cache_dir = Path(cache_dir)
        self._espeak = espeak
        self._timeout = timeout
        self._voices: tuple[frozenset[str], frozenset[str]] | None = None

    @property
    def cache_dir(self) -> Path:
        """Where rendered prompts are kept."""
        return self._cache_dir

    def available_languages(self) -> set[str]:
        """Language codes that :meth:`render` accepts (``en``, ``en-us``, ``de``, ...).

        These are the languages of the installed espeak-ng voices, except ``ja``, which is
        listed only when pyopenjtalk is installed.
        """
        languages, _ = self._espeak_voices()
        result = set(languages) - {"ja"}
        if _pyopenjtalk_available():
            result.add("ja")
        return result

    def render(self, text: str, lang: str = "en", voice: str | None = None) -> Path:
        """Synthesise ``text`` and return the path of an 8 kHz mono int16 WAV file.

        ``voice`` is an espeak-ng voice (``en-us``, ``gmw/en-GB-x-rp``, ``en-us+f3``); by
        default the language's own voice is used. A cached rendering is returned without
        running the engine again.
        """
        text = text.strip()
        if not text:
            raise TtsError("cannot speak empty text")
        if len(text) > MAX_TEXT_CHARS:
            raise TtsError(f"prompt text is {len(text)} characters, more than {MAX_TEXT_CHARS}")
        if "\x00" in text:
            raise TtsError("prompt text contains a NUL character")
        engine = _JA_ENGINE if lang == "ja" else _ESPEAK_ENGINE
        if engine == _JA_ENGINE and voice is not None:
            raise TtsError(f"Japanese speech has a single voice; got voice {voice!r}", "voice")
        if engine == _ESPEAK_ENGINE:
            self._check_espeak_voice(lang, voice)
        key = json.dumps([engine, lang, voice, text], ensure_ascii=False)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        target = self._cache_dir / f"{engine}-{digest}.wav"
        if target.exists():
            return target
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._cache_dir, prefix=".render-") as tmp:
            if engine == _JA_ENGINE:
                audio = _render_japanese(text)
            else:
                audio = self._render_espeak(text, voice or lang, Path(tmp) / "espeak.wav")
            partial = Path(tmp) / "out.wav"
            sf.write(str(partial), audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            # Atomic publish: a concurrent reader sees either no file or the whole file.
            os.replace(partial, target)
        return target

    def _render_espeak(self, text: str, voice: str, wav: Path) -> Frame:
        # "--" ends option parsing, so text starting with "-" is spoken, not parsed.
        argv = [self._espeak, "-v", voice, "-w", str(wav), "--", text]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                timeout=self._timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise TtsError(f"espeak-ng is not installed (no {self._espeak!r})") from exc
        except subprocess.TimeoutExpired as exc:
            raise TtsError(f"espeak-ng did not finish within {self._timeout:g} s") from exc
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip()
            raise TtsError(f"espeak-ng failed (exit {proc.returncode}): {detail}")
        try:
            return load_audio(wav)
        except AudioError as exc:
            raise TtsError(f"espeak-ng produced no usable audio: {exc.reason}") from exc

    def _espeak_voices(self) -> tuple[frozenset[str], frozenset[str]]:
        """(language codes, other voice identifiers) from ``espeak-ng --voices``, cached."""
        if self._voices is None:
            try:
                proc = subprocess.run(
                    [self._espeak, "--voices"],
                    capture_output=True,
                    timeout=self._timeout,
                    check=True,
                    stdin=subprocess.DEVNULL,
                )
            except FileNotFoundError as exc:
                raise TtsError(f"espeak-ng is not installed (no {self._espeak!r})") from exc
            except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
                raise TtsError(f"cannot list espeak-ng voices: {exc}") from exc
            self._voices = _parse_voices(proc.stdout.decode("utf-8", "replace"))
        return self._voices

    def _check_espeak_voice(self, lang: str, voice: str | None) -> None:
        languages, names = self._espeak_voices()
        if lang not in languages:
            # espeak-ng knows over a hundred languages: suggest the nearest, not the list.
            close = difflib.get_close_matches(lang, sorted(self.available_languages()), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise TtsError(
                f"no text-to-speech voice for language {lang!r}; {hint}"
                "`espeak-ng --voices` lists the installed ones",
                "language",
            )
        if voice is not None:
            base = voice.split("+", 1)[0]  # "+f3" selects a variant of the voice
            if base not in languages and base.lower() not in names:
                raise TtsError(
                    f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)", "voice"
                )


def _parse_voices(listing: str) -> tuple[frozenset[str], frozenset[str]]:
    """Parse ``espeak-ng --voices``: ``Pty Language Age/Gender VoiceName File Other Languages``.

    The "Other Languages" column, e.g. ``(en 2)``, is where plain ``en`` appears.
    """
    languages: set[str] = set()
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        languages.add(fields[1])
        names.add(fields[3].lower())
        names.add(fields[4].lower())
        for token in fields[5:]:
            if token.startswith("("):
                languages.add(token.lstrip("("))
    return frozenset(languages), frozenset(names)


def _pyopenjtalk_available() -> bool:
    try:
        importlib.import_module("pyopenjtalk")
    except ImportError:
        return False
    return True


def _render_japanese(text: str) -> Frame:
    try:
        module = importlib.import_module("pyopenjtalk")
    except ImportError as exc:
        raise TtsError(JA_MISSING, "language") from exc
    try:
        # pyopenjtalk.tts returns int16-scaled float64 samples and the rate (48 kHz).
        wave, rate = module.tts(text)
    except Exception as exc:  # an engine bug must surface as a TtsError, not kill the caller
        raise TtsError(f"pyopenjtalk failed: {exc}") from exc
    samples = np.asarray(wave, dtype=np.float64) / 32768.0
    if samples.ndim != 1 or not len(samples):
        raise TtsError("pyopenjtalk produced no audio")
    return to_engine_audio(samples, int(rate))
