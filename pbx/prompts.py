"""The PBX's prompts and music, resolved from the configuration into audio ready to play.

:func:`resolve` turns the prompt and music *sources* of a validated :class:`~pbx.config.Config`
into engine audio (mono int16 at 8 kHz): files are decoded, URLs fetched (or revalidated) into
the cache, text spoken by text-to-speech once and cached. Anything that cannot be played is a
:class:`~pbx.config.ConfigError` naming the file, line and key, exactly like a validation error,
so ``pbx check``, ``pbx run`` and a reload refuse it before the PBX uses it. :func:`load_resolved`
does both steps and attaches the result to the configuration (``config.resolved_prompts``), so a
reload swaps configuration and audio in one assignment.

Everything here blocks (network, files, subprocesses, decoding): call it from a worker thread
(``asyncio.to_thread``). The :class:`Prompts` object it returns is then read from the event loop:
``get``, ``digit`` and ``hold_music`` only wrap audio already in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from media.sources import AudioError, LoopingSource, PlaylistSource, default_hold_music, load_audio
from media.tones import FRAME_SAMPLES, Frame
from media.tts import TextToSpeech, TtsError
from pbx.config import Config, ConfigError, ConfigIssue, load_config
from pbx.config_errors import KeyPath
from pbx.config_prompts import DTMF_KEYS, PROMPT_NAMES, DigitsPrompt, PromptSource
from pbx.config_queues import queue_prompts
from pbx.config_routing import IvrMenu, ivr_prompts
from pbx.promptcache import FetchError, UrlCache

__all__ = ["PROMPT_NAMES", "Prompts", "load_resolved", "resolve"]

_WORKERS = 4  # downloads and espeak-ng runs wait on I/O and subprocesses, not on the GIL

_DecodeKey = tuple[str, int, int]


def _frozen(samples: Frame) -> Frame:
    # Shared by every call that plays it: nobody may write into it.
    samples.setflags(write=False)
    return samples


class Prompts:
    """Resolved prompts and music of one configuration; replaced as a whole on reload.

    Sources returned by :meth:`get`, :meth:`digit`, :meth:`text` and :meth:`hold_music` are new
    objects each time (a source remembers its position), over audio shared read-only.
    """

    def __init__(
        self,
        *,
        clips: Mapping[str, Frame],
        digits: Mapping[str, Frame],
        music: Frame | None,
        tts: TextToSpeech,
        language: str,
        warnings: tuple[ConfigIssue, ...] = (),
        decoded: Mapping[_DecodeKey, Frame] | None = None,
        spoken: Mapping[tuple[str, str, str | None], Frame] | None = None,
        keep: object = None,
        ivr: Mapping[str, Frame] | None = None,
        queue_music: Mapping[str, Frame | None] | None = None,
    ) -> None:
        self._queue_music = dict(queue_music or {})
        self._clips = dict(clips)
        self._ivr = dict(ivr or {})
        self._digits = dict(digits)
        self._music = music
        self._tts = tts
        self._language = language
        self.warnings = warnings
        """Problems that did not stop the configuration (a URL served from the cache)."""
        self._decoded = dict(decoded or {})
        self._spoken = dict(spoken or {})
        self._lock = threading.Lock()
        self._keep = keep  # a temporary cache directory, removed with this object

    @property
    def names(self) -> tuple[str, ...]:
        """The names :meth:`get` accepts."""
        return tuple(self._clips)

    @property
    def language(self) -> str:
        """The default language of :meth:`text` (``media.language``)."""
        return self._language

    def clip(self, name: str) -> Frame:
        """The audio of system prompt ``name`` (read-only)."""
        try:
            return self._clips[name]
        except KeyError:
            raise KeyError(f"no prompt {name!r}; prompts are {', '.join(self._clips)}") from None

    def get(self, name: str) -> PlaylistSource:
        """A fresh source playing system prompt ``name`` once (``busy``, ``goodbye``, ...)."""
        return PlaylistSource([self.clip(name)])

    def ivr_clip(self, key: str) -> Frame:
        """An IVR prompt written in the config, by :func:`ivr_key` of its key path."""
        return self._ivr[key]

    def digit_clip(self, key: str) -> Frame:
        """The read-back of phone key ``key`` (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""
        try:
            return self._digits[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a phone key") from None

    def digit(self, key: str) -> PlaylistSource:
        """A fresh source saying which key was pressed ("You pressed 1.")."""
        return PlaylistSource([self.digit_clip(key)])

    def text_clip(self, text: str, language: str | None = None, voice: str | None = None) -> Frame:
        """``text`` spoken in ``language`` (default ``media.language``), rendered once.

        Blocking the first time a text is asked for (espeak-ng runs, or the disk cache is
        read): from the event loop, call it through ``asyncio.to_thread``. Raises
        :class:`~media.tts.TtsError` for a language or voice that cannot be spoken.
        """
        key = (text.strip(), language or self._language, voice)
        with self._lock:
            found = self._spoken.get(key)
        if found is not None:
            return found
        try:
            samples = _frozen(load_audio(self._tts.render(key[0], key[1], voice)))
        except AudioError as exc:
            raise TtsError(f"speech could not be read back: {exc.reason}") from exc
        with self._lock:
            return self._spoken.setdefault(key, samples)

    def text(
        self, text: str, language: str | None = None, voice: str | None = None
    ) -> PlaylistSource:
        """A fresh source speaking ``text`` once (see :meth:`text_clip`; blocking at first)."""
        return PlaylistSource([self.text_clip(text, language, voice)])

    def queue_music(self, queue: str) -> LoopingSource:
        """A fresh, endless source of ``queues.<queue>.music`` (the hold music if unset)."""
        if queue not in self._queue_music:
            return self.hold_music()
        music = self._queue_music[queue]
        return default_hold_music() if music is None else LoopingSource(music)

    def hold_music(self) -> LoopingSource:
        """A fresh, endless source of the hold music (``media.hold_music``)."""
        if self._music is None:
            return default_hold_music()
        return LoopingSource(self._music)


class _Resolver:
    """One resolution: collects the audio, the issues and the warnings."""

    def __init__(self, config: Config, previous: Prompts | None) -> None:
        self.config = config
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self.decoded: dict[_DecodeKey, Frame] = {}
        self._known = previous._decoded if previous is not None else {}
        self.keep: tempfile.TemporaryDirectory[str] | None = None
        cache = self._cache_dir()
        self.tts = TextToSpeech(cache / "tts")
        fetch = config.media.fetch
        self.urls: UrlCache | None = None
        try:
            self.urls = UrlCache(
                cache / "url",
                timeout=fetch.timeout,
                max_bytes=fetch.max_bytes,
                ca_bundle=fetch.ca_bundle,
                user_agent=config.sip.user_agent,
            )
        except FetchError as exc:
            self.issues.append(config.issue(("media", "fetch", "ca_bundle"), exc.reason))

    def _cache_dir(self) -> Path:
        wanted = self.config.storage.cache_dir
        try:
            wanted.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=wanted):
                pass
            return wanted
        except OSError as exc:
            self.keep = tempfile.TemporaryDirectory(prefix="pbx-prompt-cache-")
            key: KeyPath = ("storage", "cache")
            if not self.config.written(key):
                key = ("storage", "recordings")
            self.warnings.append(
                self.config.issue(
                    key,
                    f"cannot use {wanted} for the prompt cache ({exc.strerror or exc}); "
                    "using a temporary directory, so nothing is kept across restarts",
                )
            )
            return Path(self.keep.name)

    def remember(self, path: Path, samples: Frame) -> None:
        """Note audio decoded elsewhere (a fresh download), so a reload need not decode it."""
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            self.decoded[(str(path), stat.st_mtime_ns, stat.st_size)] = _frozen(samples)

    def decode(self, path: Path) -> Frame:
        """``load_audio`` with a memory of files already decoded (same path, size and mtime)."""
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise AudioError(path, exc.strerror or str(exc)) from None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        samples = self._known.get(key)
        if samples is None:
            samples = self.decoded.get(key)
        if samples is None:
            samples = _frozen(load_audio(path))
        self.decoded[key] = samples
        return samples

    def source(self, source: PromptSource, path: KeyPath) -> Frame | None:
        """The audio of one source, or None after recording an issue at ``path``."""
        if source.text is not None:
            return self.speak(source.text, source.language, source.voice, path)
        if source.file is not None:
            try:
                return self.decode(source.file)
            except AudioError as exc:
                self.issues.append(self.config.issue((*path, "file"), str(exc)))
                return None
        assert source.url is not None
        if self.urls is None:
            return None  # the CA bundle problem is already reported
        try:
            fetched = self.urls.fetch(source.url, self.decode)
        except FetchError as exc:
            self.issues.append(
                self.config.issue((*path, "url"), f"cannot fetch {source.url}: {exc.reason}")
            )
            return None
        if fetched.warning is not None:
            self.warnings.append(
                self.config.issue((*path, "url"), f"cannot fetch {source.url}: {fetched.warning}")
            )
        if fetched.status == "downloaded":
            self.remember(fetched.path, fetched.samples)
        return fetched.samples

    def speak(
        self, text: str, language: str | None, voice: str | None, path: KeyPath
    ) -> Frame | None:
        lang = language or self.config.media.language
        try:
            return self.decode(self.tts.render(text, lang, voice))
        except OSError as exc:  # the cache directory filled up or vanished meanwhile
            self.issues.append(
                self.config.issue((*path, "text"), f"cannot keep the spoken prompt: {exc}")
            )
            return None
        except (TtsError, AudioError) as exc:
            subject = getattr(exc, "subject", None)
            message = str(exc)
            if subject == "voice" and voice is not None:
                key: KeyPath = (*path, "voice")
            elif subject == "language" and language is not None:
                key = (*path, "language")
            else:
                key = (*path, "text")
                if subject == "language":
                    message += " (the language comes from media.language)"
            self.issues.append(self.config.issue(key, message))
            return None


def resolve(config: Config, previous: Prompts | None = None) -> Prompts:
    """Resolve the prompts and music of ``config`` into audio (blocking; see the module).

    ``previous`` is the running configuration's result, whose decoded files are reused when
    unchanged. Raises :class:`~pbx.config.ConfigError` listing every prompt that cannot be
    played; URLs that failed but have a cached copy are warnings on the result.
    """
    resolver = _Resolver(config, previous)
    section = config.prompts
    digits = section.digits
    jobs: dict[tuple[str, str], Callable[[], Frame | None]] = {}
    for name, source in section.sources().items():
        jobs[("prompt", name)] = _job(resolver, source, ("prompts", name))
    for key in DTMF_KEYS:
        jobs[("digit", key)] = _speak_job(resolver, digits, key)
    ivr_sources = list(ivr_prompts(config.ivr)) + queue_prompts(config.queues)
    for path, source in ivr_sources:
        jobs[("ivr", ivr_key(path))] = _job(resolver, source, path)
    option_texts = sorted(set(_option_texts(config)))
    for text in option_texts:
        jobs[("text", text)] = _text_job(resolver, text, ("ivr",))
    music = config.media.hold_music
    if music.is_default:
        jobs[("music", "")] = lambda: _frozen_default()
    else:
        jobs[("music", "")] = _job(resolver, music.as_prompt(), ("media", "hold_music"))
    for name, queue in config.queues.items():
        if queue.music is not None and not queue.music.is_default:
            jobs[("queue_music", name)] = _job(resolver, queue.music.as_prompt(),
                                               ("queues", name, "music"))
    # Each TextToSpeech lists the installed voices once; do it before the workers race to.
    with contextlib.suppress(TtsError):  # every text prompt reports it below
        resolver.tts.available_languages()
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="prompts") as pool:
        futures = {what: pool.submit(job) for what, job in jobs.items()}
        results = {what: future.result() for what, future in futures.items()}
    music_samples = results[("music", "")]
    if not music.is_default and music_samples is not None and len(music_samples) < FRAME_SAMPLES:
        resolver.issues.append(
            config.issue(("media", "hold_music"), "music is shorter than 20 ms; nothing to loop")
        )
    for name, queue in config.queues.items():
        samples = results.get(("queue_music", name))
        if queue.music is not None and not queue.music.is_default and samples is not None \
                and len(samples) < FRAME_SAMPLES:
            resolver.issues.append(config.issue(("queues", name, "music"),
                                                "music is shorter than 20 ms; nothing to loop"))
    resolver.issues.extend(_menu_issues(config))
    if resolver.issues:
        raise ConfigError(sorted(set(resolver.issues)))
    clips = {name: results[("prompt", name)] for name in PROMPT_NAMES}
    spoken: dict[tuple[str, str, str | None], Frame] = {}
    for name, source in section.sources().items():
        if source.text is not None:
            lang = source.language or config.media.language
            spoken[(source.text, lang, source.voice)] = _present(clips[name])
    for text in option_texts:
        spoken[(text, config.media.language, None)] = _present(results[("text", text)])
    return Prompts(
        ivr={ivr_key(path): _present(results[("ivr", ivr_key(path))])
             for path, _ in ivr_sources},
        clips={name: _present(samples) for name, samples in clips.items()},
        digits={key: _present(results[("digit", key)]) for key in DTMF_KEYS},
        music=None if music.is_default else _present(music_samples),
        queue_music={
            name: (None if queue.music.is_default else _present(results[("queue_music", name)]))
            for name, queue in config.queues.items() if queue.music is not None
        },
        tts=resolver.tts,
        language=config.media.language,
        warnings=tuple(resolver.warnings),
        decoded=resolver.decoded,
        spoken=spoken,
        keep=resolver.keep,
    )


def load_resolved(path: str | Path, previous: Prompts | None = None) -> Config:
    """:func:`~pbx.config.load_config` and :func:`resolve`: a configuration whose prompts are
    ready (``config.resolved_prompts``). Raises what either raises."""
    config = load_config(path)
    config.attach_prompts(resolve(config, previous))
    return config


def ivr_key(path: tuple[str | int, ...]) -> str:
    """The name an IVR prompt's audio is kept under: its key path, dotted."""
    return ".".join(str(part) for part in path)


def _option_texts(config: Config) -> Iterator[str]:
    """The option announcements the IVR menus generate from their templates."""

    def walk(menu: IvrMenu) -> Iterator[str]:
        for key, option in menu.options.items():
            text = menu.option_text(key)
            if text is not None:
                yield text
            if option.menu is not None:
                yield from walk(option.menu)

    for menu in config.ivr.values():
        yield from walk(menu)


def _menu_issues(config: Config) -> list[ConfigIssue]:
    """What the IVR engine would refuse in the configured menus (checked at load, not when
    a caller arrives), each at its key."""
    from ivr import menu_problems
    from pbx.ivrservice import build_menu

    issues = []
    for name, menu in config.ivr.items():
        for problem in menu_problems(build_menu(name, menu)):
            # The top menu is named "ivr.<name>", so the path is the config's key path.
            parts: list[str | int] = list(problem.path.split("."))
            issues.append(config.issue(tuple(parts), problem.message))
    return issues


def _text_job(resolver: _Resolver, text: str, path: KeyPath) -> Callable[[], Frame | None]:
    return lambda: resolver.speak(text, None, None, path)


def _present(samples: Frame | None) -> Frame:
    assert samples is not None  # resolve() raised if any were missing
    return samples


def _frozen_default() -> Frame | None:
    default_hold_music()  # decoded once per process, off the event loop
    return None


def _job(resolver: _Resolver, source: PromptSource, path: KeyPath) -> Callable[[], Frame | None]:
    return lambda: resolver.source(source, path)


def _speak_job(resolver: _Resolver, digits: DigitsPrompt, key: str) -> Callable[[], Frame | None]:
    text = digits.for_key(key)
    return lambda: resolver.speak(text, digits.language, digits.voice, ("prompts", "digits"))

