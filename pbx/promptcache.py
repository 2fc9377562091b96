"""Prompt and music URLs, downloaded over HTTP(S) and kept on disk.

Blocking (sockets, files, decoding): run it in a worker thread, never on the event loop.

Each URL has two files in the cache directory: ``<hash of url>.json`` (the URL, its ``ETag``
and ``Last-Modified``, when it was fetched, and the name of the data file) and the data file
itself, named by a hash of its content. A new download is written to a temporary file, checked
by decoding it as audio, then published by replacing the JSON file, so readers (another
``pbx check``, a crash half-way) see the old copy or the new one, never a mix.

Revalidation (RFC 9110 13.1, RFC 9111 4.3): a cached URL is asked for again with
``If-None-Match`` / ``If-Modified-Since``; ``304 Not Modified`` keeps the copy. When the server
cannot be reached, answers an error, or sends something that is not audio, a cached copy is kept
and the problem is returned as a warning; without a cached copy it is a :class:`FetchError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

from media.sources import AudioError, load_audio
from media.tones import Frame

__all__ = ["FetchError", "Fetched", "UrlCache"]

_CHUNK = 64 * 1024
_ACCEPT = "audio/*, application/ogg;q=0.9, application/octet-stream;q=0.5, */*;q=0.1"


class FetchError(Exception):
    """A URL could not be fetched (and no cached copy stands in); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    """Audio of a URL, from the network or the cache."""

    path: Path
    """The cached file the audio was decoded from."""
    samples: Frame
    """Engine audio (mono int16, 8 kHz)."""
    status: str
    """``"downloaded"``, ``"not-modified"`` (304, the cached copy is current) or ``"stale"``
    (the URL failed and the cached copy stood in; see ``warning``)."""
    warning: str | None = None


@dataclass(frozen=True)
class _Entry:
    data: Path
    etag: str | None
    last_modified: str | None
    fetched_at: float


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https URLs only (urllib would also follow ftp)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.lower().startswith(("http://", "https://")):
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to a non-HTTP URL {newurl!r}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class UrlCache:
    """Downloads URLs into ``directory`` and revalidates them.

    ``timeout`` bounds each download in seconds, connecting included; ``max_bytes`` bounds its
    size; ``ca_bundle`` is a PEM file of certificate authorities to trust instead of the
    system's (for an internal server with its own CA).
    """

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = 10.0,
        max_bytes: int = 50_000_000,
        ca_bundle: Path | None = None,
        user_agent: str = "PBX",
    ) -> None:
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError("timeout and max_bytes must be positive")
        self._directory = directory
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._user_agent = user_agent
        try:
            context = ssl.create_default_context(
                cafile=str(ca_bundle) if ca_bundle is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"cannot load CA bundle {ca_bundle}: {exc}") from exc
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _HttpOnlyRedirects()
        )

    @property
    def directory(self) -> Path:
        """Where downloads are kept."""
        return self._directory

    def cached(self, url: str) -> Path | None:
        """The cached file of ``url``, if there is one."""
        entry = self._entry(url)
        return entry.data if entry is not None else None

    def fetch(self, url: str, decode: Callable[[Path], Frame] = load_audio) -> Fetched:
        """The audio at ``url``: downloaded, or revalidated from the cache.

        ``decode`` turns a file into engine audio (:func:`~media.sources.load_audio`, or a
        caller's version that remembers files it already decoded) and raises
        :class:`~media.sources.AudioError` for a file that is not audio. Raises
        :class:`FetchError` when the URL cannot be fetched or is not audio and there is no
        usable cached copy.
        """
        entry = self._entry(url)
        cached: Frame | None = None
        if entry is not None:
            try:
                cached = decode(entry.data)
            except AudioError:
                entry, cached = None, None  # damaged or deleted: fetch it again, unconditionally
        try:
            result = self._download(url, entry, decode)
        except FetchError as exc:
            if entry is None or cached is None:
                raise
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry.fetched_at))
            return Fetched(
                entry.data,
                cached,
                "stale",
                f"{exc.reason}; using the copy fetched {when}",
            )
        if result is None:
            assert entry is not None and cached is not None
            return Fetched(entry.data, cached, "not-modified")
        path, samples = result
        return Fetched(path, samples, "downloaded")

    # -- cache files --------------------------------------------------------------------------
    def _key(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]

    def _meta_path(self, url: str) -> Path:
        return self._directory / f"{self._key(url)}.json"

    def _entry(self, url: str) -> _Entry | None:
        try:
            meta = json.loads(self._meta_path(url).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        name = meta.get("file")
        if not isinstance(name, str) or "/" in name or not name:
            return None
        data = self._directory / name
        if not data.is_file():
            return None
        etag, modified = meta.get("etag"), meta.get("last_modified")
        fetched = meta.get("fetched_at")
        return _Entry(
            data,
            etag if isinstance(etag, str) else None,
            modified if isinstance(modified, str) else None,
            float(fetched) if isinstance(fetched, int | float) else 0.0,
        )

    def _publish(self, url: str, body: Path, headers: Message, old: _Entry | None) -> Path:
        digest = hashlib.sha256()
        with body.open("rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
        data = self._directory / f"{self._key(url)}-{digest.hexdigest()[:16]}.audio"
        os.replace(body, data)
        meta = {
            "url": url,
            "etag": headers.get("ETag"),
            "last_modified": headers.get("Last-Modified"),
            "fetched_at": time.time(),
            "file": data.name,
        }
        fd, partial = tempfile.mkstemp(dir=self._directory, prefix=".meta-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        # The JSON file is the commit point: it names the data file that is now current.
        os.replace(partial, self._meta_path(url))
        if old is not None and old.data != data:
            with contextlib.suppress(OSError):
                old.data.unlink()
        return data

    # -- HTTP ---------------------------------------------------------------------------------
    def _download(
        self, url: str, entry: _Entry | None, decode: Callable[[Path], Frame]
    ) -> tuple[Path, Frame] | None:
        """The new file and its audio, or None when the server says the copy is current."""
        headers = {"User-Agent": self._user_agent, "Accept": _ACCEPT}
        if entry is not None:
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            if entry.last_modified:
                headers["If-Modified-Since"] = entry.last_modified
        request = urllib.request.Request(url, headers=headers)
        deadline = time.monotonic() + self._timeout
        try:
            response = self._opener.open(request, timeout=self._timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304 and entry is not None:
                return None
            raise FetchError(f"HTTP {exc.code} {exc.reason}".rstrip()) from None
        except urllib.error.URLError as exc:
            raise FetchError(_network_reason(exc.reason, self._timeout)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchError(_network_reason(exc, self._timeout)) from None
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._directory, prefix=".download-")
        except OSError as exc:
            response.close()
            raise FetchError(f"cannot write to the cache {self._directory}: {exc}") from None
        body = Path(name)
        try:
            with response, os.fdopen(fd, "wb") as out:
                self._copy_body(response, out, deadline)
            try:
                samples = load_audio(body)  # the temporary file: nothing to remember it by
            except AudioError as exc:
                kind = response.headers.get("Content-Type") or "no Content-Type"
                raise FetchError(f"not audio ({kind}): {exc.reason}") from None
            return self._publish(url, body, response.headers, entry), samples
        finally:
            with contextlib.suppress(OSError):
                body.unlink()

    def _copy_body(self, response: Any, out: IO[bytes], deadline: float) -> None:
        status = int(response.status)
        if status != 200:
            raise FetchError(f"HTTP {status} {response.reason}: expected 200 with the audio")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self._max_bytes:
            raise FetchError(f"file is {int(length)} bytes, more than the {self._limit()} limit")
        total = 0
        try:
            while True:
                # read1: at most one socket read, so the deadline is checked while a slow
                # server trickles bytes (read(n) would wait for all n).
                block = response.read1(_CHUNK)
                if not block:
                    break
                total += len(block)
                if total > self._max_bytes:
                    raise FetchError(f"file is larger than the {self._limit()} limit")
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out: not downloaded within {self._timeout:g} s")
                out.write(block)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(_network_reason(exc, self._timeout)) from None
        if total == 0:
            raise FetchError("the server sent an empty body")

    def _limit(self) -> str:
        return f"{self._max_bytes / 1_000_000:g} MB"


def _network_reason(reason: object, timeout: float) -> str:
    """A short reason for a failed request, fit to show the admin."""
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"timed out: no answer within {timeout:g} s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {reason.verify_message or reason}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return f"cannot connect: {reason.strerror}"
    if isinstance(reason, http.client.HTTPException):
        return f"bad HTTP response: {type(reason).__name__} {reason}".rstrip()
    return f"cannot fetch: {reason}"
