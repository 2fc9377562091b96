"""Configuration types for what the PBX plays: prompt sources, music sources, system prompts.

A *prompt source* is exactly one of ``{text: ...}`` (spoken by text-to-speech, with an optional
``language`` and ``voice``), ``{file: PATH}`` (an audio file; relative paths are relative to the
configuration file's directory) or ``{url: https://...}`` (fetched over HTTP(S) and cached). A
*music source* is ``default`` (the shipped hold music) or a file or URL source, played in a loop.
IVR menus and queues reuse these types for their own prompts and music.

Validation here only checks the shape of the values. Whether a file decodes, a URL answers or a
language has a voice is decided when the configuration is *resolved* (:mod:`pbx.prompts`),
before the PBX accepts it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pbx.durations import parse_duration

__all__ = [
    "DTMF_KEYS",
    "PROMPT_NAMES",
    "DigitsPrompt",
    "FetchSection",
    "MusicSource",
    "PromptSource",
    "PromptsSection",
    "base_dir",
    "check_language",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Duration = Annotated[float, BeforeValidator(parse_duration)]

DTMF_KEYS = "0123456789*#ABCD"
"""Every key a phone can send (RFC 4733 3.2: events 0-15)."""

MAX_TEXT_CHARS = 4000
"""Longest prompt text (several minutes of speech); the text-to-speech engine's own limit."""

_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_VOICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+./-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SOURCE_HINT = "{text: ...}, {file: PATH} or {url: https://...}"
_MUSIC_HINT = "default, {file: PATH} or {url: https://...}"


def base_dir(info: ValidationInfo) -> Path | None:
    """The directory relative paths resolve against (passed in by ``load_config``)."""
    context = info.context
    if isinstance(context, Mapping):
        base = context.get("base_dir")
        if isinstance(base, Path):
            return base
    return None


def check_language(value: str) -> str:
    """A language code as espeak-ng names it (``en``, ``en-us``, ``pt-br``), lower-case."""
    normal = value.strip().lower().replace("_", "-")
    if not _LANGUAGE.fullmatch(normal):
        raise ValueError(f"invalid language {value!r}: expected a code such as en, en-us or de")
    return normal


def _check_text(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("text must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters, more than {MAX_TEXT_CHARS}")
    if _CONTROL.search(text):
        raise ValueError("text must not contain control characters")
    return text


def _check_voice(value: str | None) -> str | None:
    if value is None:
        return None
    if not _VOICE.fullmatch(value.strip()):
        raise ValueError(f"invalid voice {value!r}: expected an espeak-ng voice such as en-us+f3")
    return value.strip()


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    url = value.strip()
    if not url or any(ch.isspace() for ch in url) or _CONTROL.search(url):
        raise ValueError(f"invalid URL {value!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValueError(f"invalid URL {value!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"URL {value!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("user names and passwords in URLs are not supported")
    del port
    return url


def _resolve_path(value: object, info: ValidationInfo, what: str) -> object:
    if not isinstance(value, str | Path):
        return value
    text = str(value).strip()
    if not text:
        raise ValueError(f"{what} must name a file")
    path = Path(os.path.expanduser(text))
    base = base_dir(info)
    if base is not None and not path.is_absolute():
        path = Path(os.path.normpath(base / path))
    return path


class PromptSource(BaseModel):
    """What to play: exactly one of ``text`` (with optional ``language`` and ``voice``),
    ``file`` or ``url``."""

    model_config = _FROZEN

    text: str | None = None
    language: str | None = None
    """Language of ``text``; ``media.language`` when not given."""
    voice: str | None = None
    """An espeak-ng voice (``en-us+f3``); the language's own voice when not given."""
    file: Path | None = None
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: object) -> object:
        if isinstance(value, PromptSource | Mapping):
            return value
        raise ValueError(f"expected {_SOURCE_HINT}, got {_describe(value)}")

    @model_validator(mode="after")
    def _exactly_one(self) -> PromptSource:
        given = [name for name in ("text", "file", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            if not given:
                raise ValueError(f"give one of text, file or url: {_SOURCE_HINT}")
            raise ValueError(f"give only one of text, file or url, not {' and '.join(given)}")
        if self.text is None and (self.language is not None or self.voice is not None):
            raise ValueError("language and voice apply only to text prompts")
        return self

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        return _check_voice(value)

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_path(value, info, "file")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @property
    def kind(self) -> str:
        """``"text"``, ``"file"`` or ``"url"``."""
        return "text" if self.text is not None else "file" if self.file is not None else "url"


class MusicSource(BaseModel):
    """Music played in a loop: ``default`` (the shipped hold music), ``{file: PATH}`` or
    ``{url: https://...}``."""

    model_config = _FROZEN

    file: Path | None = None
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, value: object) -> object:
        if isinstance(value, MusicSource):
            return value
        if isinstance(value, str):
            if value.strip().lower() == "default":
                return {}
            raise ValueError(f"expected {_MUSIC_HINT}, got {value!r}")
        if not isinstance(value, Mapping):
            raise ValueError(f"expected {_MUSIC_HINT}, got {_describe(value)}")
        if "text" in value:
            raise ValueError(f"music cannot be text-to-speech; use {_MUSIC_HINT}")
        given = [name for name in ("file", "url") if value.get(name) is not None]
        if len(given) > 1:
            raise ValueError("give only one of file or url, not both")
        if not given:
            raise ValueError(f"give file or url (or write `default`): {_MUSIC_HINT}")
        return value

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_path(value, info, "file")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @property
    def is_default(self) -> bool:
        """True for ``default``: the hold music shipped with the PBX."""
        return self.file is None and self.url is None

    def as_prompt(self) -> PromptSource:
        """The same file or URL as a prompt source (for resolving it); not for ``default``."""
        if self.is_default:
            raise ValueError("the default music has no file or URL")
        return PromptSource(file=self.file, url=self.url)


def _describe(value: object) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class DigitsPrompt(BaseModel):
    """The read-back of a key press: ``text`` with ``{digit}`` where the key goes, spoken for
    each of the 16 DTMF keys. ``names`` says how to speak a key (``"#": Raute``) when the
    language's voice does not read the symbol itself."""

    model_config = _FROZEN

    text: str = "You pressed {digit}."
    language: str | None = None
    voice: str | None = None
    names: dict[str, str] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _template(cls, value: str) -> str:
        text = _check_text(value)
        if "{digit}" not in text:
            raise ValueError(
                'text must contain {digit} where the key goes, e.g. "You pressed {digit}."'
            )
        return text

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        return _check_voice(value)

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if len(key) != 1 or key not in DTMF_KEYS:
                raise ValueError(f"{key!r} is not a phone key; keys are {' '.join(DTMF_KEYS)}")
            _check_text(name)
        return value

    def for_key(self, key: str) -> str:
        """The text to speak for ``key``."""
        return self.text.replace("{digit}", self.names.get(key, key))


def _english(text: str) -> PromptSource:
    # The built-in texts are English, so they are spoken in English whatever media.language
    # says; an admin who overrides a prompt's text gets media.language.
    return PromptSource(text=text, language="en")


class PromptsSection(BaseModel):
    """``prompts:`` — the PBX's own announcements, each a prompt source. Every one has an
    English text-to-speech default, so an admin overrides only those they want to change."""

    model_config = _FROZEN

    unavailable: PromptSource = _english("The person you are calling is not available.")
    busy: PromptSource = _english("The person you are calling is busy.")
    not_found: PromptSource = _english("The number you dialled does not exist.")
    goodbye: PromptSource = _english("Goodbye.")
    echo_test: PromptSource = _english(
        "Echo test. After the tone, speak and you will hear yourself."
    )
    dtmf_test: PromptSource = _english(
        "Press keys on your phone. Each key you press is read back."
    )
    recording_paused: PromptSource = _english("Recording paused.")
    recording_resumed: PromptSource = _english("Recording resumed.")
    invalid_choice: PromptSource = _english("Sorry, that is not a valid choice.")
    presence_available: PromptSource = _english("You are now available for calls.")
    presence_do_not_disturb: PromptSource = _english("Do not disturb is on.")
    presence_offline: PromptSource = _english("You are now offline.")
    queue_full: PromptSource = _english(
        "All our agents are busy and no more callers can wait. Please call again later."
    )
    queue_timeout: PromptSource = _english(
        "We are sorry, nobody could take your call. Please call again later."
    )
    queue_closed: PromptSource = _english(
        "We are sorry, we cannot take your call now. Please call again later."
    )
    callback_offer: PromptSource = _english(
        "To be called back at the number you are calling from, keeping your place in line, "
        "press 1. To enter another number, press 2."
    )
    callback_enter: PromptSource = _english(
        "Enter the number to call back, then press the hash key."
    )
    callback_confirmed: PromptSource = _english(
        "Thank you. We will call you back when it is your turn. You may hang up now."
    )
    callback_connecting: PromptSource = _english("Connecting your callback.")
    agent_logged_in: PromptSource = _english("You are logged in to your queues.")
    agent_logged_out: PromptSource = _english("You are logged out of your queues.")
    agent_paused: PromptSource = _english("You are paused.")
    agent_unpaused: PromptSource = _english("You are taking queue calls again.")
    agent_not_member: PromptSource = _english("You are not a member of any queue.")
    digits: DigitsPrompt = DigitsPrompt(language="en")
    queue_position: str = "You are number {position} in line."
    """Spoken to a waiting caller (``{position}``: 2 and up); text-to-speech."""
    queue_next: str = "You are next in line."
    queue_wait: str = "Your estimated wait is about {minutes} minutes."
    """``{minutes}``: the estimated wait, rounded up."""
    queue_wait_short: str = "Your estimated wait is less than a minute."

    @field_validator("queue_position", "queue_next", "queue_wait", "queue_wait_short")
    @classmethod
    def _queue_text(cls, value: str, info: ValidationInfo) -> str:
        text = _check_text(value)
        needs = {"queue_position": "{position}", "queue_wait": "{minutes}"}.get(
            info.field_name or "")
        if needs is not None and needs not in text:
            raise ValueError(f"text must contain {needs}")
        return text

    def sources(self) -> dict[str, PromptSource]:
        """Every named prompt except ``digits``, by name."""
        return {name: getattr(self, name) for name in PROMPT_NAMES}


PROMPT_NAMES: tuple[str, ...] = tuple(
    name for name, field in PromptsSection.model_fields.items()
    if field.annotation in (PromptSource, "PromptSource")
)
"""Names of the system prompts (``prompts.<name>``), ``digits`` aside."""


class FetchSection(BaseModel):
    """``media.fetch:`` — how prompt and music URLs are downloaded."""

    model_config = _FROZEN

    timeout: Duration = Field(default=10.0, gt=0, le=600)
    """The longest one download may take, connecting included."""
    max_megabytes: float = Field(default=50.0, gt=0, le=1024)
    """Largest file accepted; a bigger one is refused (it would be held in memory)."""
    ca_bundle: Path | None = None
    """PEM file of certificate authorities to trust for https URLs instead of the system's."""

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _bundle(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_path(value, info, "ca_bundle")

    @property
    def max_bytes(self) -> int:
        """``max_megabytes`` in bytes."""
        return int(self.max_megabytes * 1_000_000)

