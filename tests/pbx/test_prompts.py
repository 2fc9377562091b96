"""Prompts and music from the config: files, URLs (a real HTTP(S) server) and text-to-speech,
resolved at load, cached on disk, revalidated on reload; problems name file, line and key."""

from __future__ import annotations

import hashlib
import io
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from media.sources import LoopingSource, PlaylistSource, default_hold_music
from media.tones import SAMPLE_RATE
from media.tts import TtsError
from pbx.config import ConfigError, load_config
from pbx.prompts import PROMPT_NAMES, Prompts, load_resolved, resolve
from tests.integration.pbx_process import run_pbx

REPO = Path(__file__).resolve().parents[2]

if shutil.which("espeak-ng") is None:  # pragma: no cover - .ci/run installs it
    pytest.fail("espeak-ng is required (Debian package espeak-ng)", pytrace=False)

# A self-signed certificate for 127.0.0.1 (valid 2000-2120), its own CA: made once with the
# `cryptography` package, so the test needs neither it nor openssl at run time.
CERT = """\
-----BEGIN CERTIFICATE-----
MIIBtjCCAV2gAwIBAgIUCZtQQDU79Wk76K5zwKEYVI9aX2AwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTAwMDEwMTAwMDAwMFoYDzIxMjAwMTAx
MDAwMDAwWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQNFAjvz7zRATFOQW4ktc0mUB8U1EveXHoMDHclILRcUp+2f9Ok59W/
h4v+vrzeo8WuzdAbSxHgmloWvtLj6EW6o4GKMIGHMA8GA1UdEQQIMAaHBH8AAAEw
DwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAYYwEwYDVR0lBAwwCgYIKwYB
BQUHAwEwHQYDVR0OBBYEFPr9unShu13asZBWUm8enCKh+IiZMB8GA1UdIwQYMBaA
FPr9unShu13asZBWUm8enCKh+IiZMAoGCCqGSM49BAMCA0cAMEQCICym592TORv1
/FAjb7tz8WuaoJR4xICqMAVGdGnx08sRAiAf/dxmQnr4R+Vb8H2SZn/S1lg3Sbqy
Q1c0lbzZqaJHCA==
-----END CERTIFICATE-----
"""
KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPW0z3wZfUB17lppb
YetinhxB/MUJ6GGpQ4xpR6nzQeuhRANCAAQNFAjvz7zRATFOQW4ktc0mUB8U1Eve
XHoMDHclILRcUp+2f9Ok59W/h4v+vrzeo8WuzdAbSxHgmloWvtLj6EW6
-----END PRIVATE KEY-----
"""


def tone(freq: float, seconds: float, rate: int, fmt: str, channels: int = 1) -> bytes:
    """An encoded file of a sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t)
    data = np.column_stack([wave] * channels) if channels > 1 else wave
    out = io.BytesIO()
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    sf.write(out, data, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def peak_hz(samples: NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


class AudioServer:
    """A real HTTP(S) server on a free loopback port, with ETag revalidation."""

    def __init__(self, tls: Path | None = None) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, If-None-Match)
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("If-None-Match")))
                if owner.delay:
                    time.sleep(owner.delay)
                found = owner.files.get(self.path)
                if found is None:
                    self.send_error(404, "Not Found")
                    return
                body, kind = found
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: bytes, kind: str = "audio/wav") -> None:
        self.files[path] = (body, kind)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def server() -> Iterator[AudioServer]:
    srv = AudioServer()
    try:
        yield srv
    finally:
        srv.close()


def config_file(directory: Path, body: str, name: str = "pbx.yaml") -> Path:
    path = directory / name
    path.write_text(
        'sip:\n  listen: ["udp:127.0.0.1:5070"]\n  domain: pbx.test\n'
        "storage:\n  recordings: rec\n" + textwrap.dedent(body),
        encoding="utf-8",
    )
    return path


def problems(path: Path, previous: Prompts | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_resolved(path, previous)
    return [line.replace(f"{path.parent}/", "") for line in str(caught.value).splitlines()]


def test_urls_in_wav_flac_and_ogg_are_fetched_decoded_and_cached(
    tmp_path: Path, server: AudioServer
) -> None:
    server.put("/busy.wav", tone(440, 1.0, 44100, "WAV", channels=2))
    server.put("/goodbye.flac", tone(600, 0.5, 16000, "FLAC"), "audio/flac")
    server.put("/unavailable.ogg", tone(1000, 1.5, 48000, "OGG"), "audio/ogg")
    server.put("/music.flac", tone(300, 2.0, 22050, "FLAC"), "audio/flac")
    path = config_file(
        tmp_path,
        f"""\
        media:
          hold_music: {{url: "{server.url('/music.flac')}"}}
        prompts:
          busy: {{url: "{server.url('/busy.wav')}"}}
          goodbye: {{url: "{server.url('/goodbye.flac')}"}}
          unavailable: {{url: "{server.url('/unavailable.ogg')}"}}
        """,
    )
    prompts = load_resolved(path).resolved_prompts
    assert prompts is not None and prompts.warnings == ()
    for name, freq, seconds in (("busy", 440, 1.0), ("goodbye", 600, 0.5),
                                ("unavailable", 1000, 1.5)):
        clip = prompts.clip(name)
        assert clip.dtype == np.int16 and clip.ndim == 1
        assert abs(len(clip) - seconds * SAMPLE_RATE) <= 2, name
        assert abs(peak_hz(clip) - freq) < 5, name
    source = prompts.get("busy")
    assert isinstance(source, PlaylistSource)
    frames = [source.next_frame() for _ in range(51)]
    assert all(f is not None and len(f) == 160 for f in frames[:50]) and frames[50] is None
    music = prompts.hold_music()
    assert isinstance(music, LoopingSource)
    looped = np.concatenate([music.next_frame() for _ in range(150)])  # 3 s from a 2 s clip
    assert abs(peak_hz(looped[:8000]) - 300) < 5 and np.abs(looped[-8000:]).max() > 5000
    # Each URL is cached on disk: its audio and a record of its ETag.
    cached = list((tmp_path / "prompt-cache" / "url").glob("*.audio"))
    assert len(cached) == 4
    assert len(list((tmp_path / "prompt-cache" / "url").glob("*.json"))) == 4
    # The audio is shared read-only between calls.
    with pytest.raises(ValueError):
        prompts.clip("busy")[0] = 1


def test_reload_revalidates_with_the_etag_and_refetches_a_changed_file(
    tmp_path: Path, server: AudioServer
) -> None:
    server.put("/busy.wav", tone(440, 1.0, 8000, "WAV"))
    path = config_file(tmp_path, f'prompts:\n  busy: {{url: "{server.url("/busy.wav")}"}}\n')
    first = load_resolved(path).resolved_prompts
    assert first is not None and abs(peak_hz(first.clip("busy")) - 440) < 5
    assert server.requests == [("/busy.wav", None)]
    # Unchanged: a conditional request, answered 304, and the cached copy is used.
    again = load_resolved(path, first).resolved_prompts
    assert again is not None and again.warnings == ()
    etag = server.requests[-1][1]
    assert etag is not None and etag.startswith('"')
    assert again.clip("busy") is first.clip("busy")  # not even decoded again
    # Changed on the server: the same conditional request now gets the new file.
    server.put("/busy.wav", tone(880, 0.5, 8000, "WAV"))
    changed = load_resolved(path, again).resolved_prompts
    assert changed is not None
    assert server.requests[-1] == ("/busy.wav", etag)
    assert abs(peak_hz(changed.clip("busy")) - 880) < 5
    assert abs(len(changed.clip("busy")) - 4000) <= 2
    # The old copy is gone from the cache; only the current one is kept.
    assert len(list((tmp_path / "prompt-cache" / "url").glob("*.audio"))) == 1


def test_server_down_at_reload_keeps_the_cached_copy_and_warns(tmp_path: Path) -> None:
    srv = AudioServer()
    srv.put("/busy.wav", tone(440, 1.0, 8000, "WAV"))
    path = config_file(tmp_path, f'prompts:\n  busy: {{url: "{srv.url("/busy.wav")}"}}\n')
    try:
        first = load_resolved(path).resolved_prompts
    finally:
        srv.close()
    assert first is not None
    # A new process (a restart) has only the disk cache: it is enough.
    config = load_resolved(path)
    prompts = config.resolved_prompts
    assert prompts is not None
    assert np.array_equal(prompts.clip("busy"), first.clip("busy"))
    [warning] = prompts.warnings
    assert warning.key == "prompts.busy.url" and warning.line == 7
    assert str(warning).startswith(f"{path}:7:")
    assert "connection refused; using the copy fetched" in warning.message


def test_errors_and_garbage_at_reload_keep_the_cache(tmp_path: Path, server: AudioServer) -> None:
    server.put("/busy.wav", tone(440, 1.0, 8000, "WAV"))
    path = config_file(tmp_path, f'prompts:\n  busy: {{url: "{server.url("/busy.wav")}"}}\n')
    first = load_resolved(path).resolved_prompts
    assert first is not None
    server.put("/busy.wav", b"<html>down for maintenance</html>", "text/html")
    garbage = load_resolved(path, first).resolved_prompts
    assert garbage is not None and np.array_equal(garbage.clip("busy"), first.clip("busy"))
    assert "not audio (text/html)" in garbage.warnings[0].message
    del server.files["/busy.wav"]
    missing = load_resolved(path, first).resolved_prompts
    assert missing is not None and np.array_equal(missing.clip("busy"), first.clip("busy"))
    assert "HTTP 404 Not Found; using the copy fetched" in missing.warnings[0].message


def test_a_url_never_fetched_is_an_error_naming_the_key_and_the_reason(
    tmp_path: Path, server: AudioServer
) -> None:
    server.put("/garbage.wav", b"\x00\x01 this is not audio " * 40, "audio/wav")
    server.put("/empty.wav", b"", "audio/wav")
    path = config_file(
        tmp_path,
        f"""\
        media:
          hold_music: {{url: "{server.url('/nothing.ogg')}"}}
        prompts:
          busy: {{url: "{server.url('/missing.wav')}"}}
          goodbye: {{url: "{server.url('/garbage.wav')}"}}
          not_found: {{url: "{server.url('/empty.wav')}"}}
        """,
    )
    base = f"http://127.0.0.1:{server.port}"
    found = problems(path)
    assert found[:2] == [
        f"pbx.yaml:7:16: media.hold_music.url: cannot fetch {base}/nothing.ogg: HTTP 404 Not Found",
        f"pbx.yaml:9:10: prompts.busy.url: cannot fetch {base}/missing.wav: HTTP 404 Not Found",
    ]
    assert found[2].startswith(
        f"pbx.yaml:10:13: prompts.goodbye.url: cannot fetch {base}/garbage.wav: not audio "
        "(audio/wav): cannot read audio"
    )
    assert found[3:] == [
        f"pbx.yaml:11:15: prompts.not_found.url: cannot fetch {base}/empty.wav: "
        "the server sent an empty body",
    ]
    assert not list((tmp_path / "prompt-cache" / "url").glob("*.json"))


def test_a_slow_server_times_out_and_a_large_file_is_refused(
    tmp_path: Path, server: AudioServer
) -> None:
    server.put("/busy.wav", tone(440, 1.0, 8000, "WAV"))
    server.put("/big.wav", tone(440, 10.0, 8000, "WAV"))  # 160 kB
    load_resolved(config_file(tmp_path, "", "warm.yaml"))  # the default prompts, spoken once
    slow = config_file(
        tmp_path,
        f"""\
        media:
          fetch: {{timeout: 500ms}}
        prompts:
          busy: {{url: "{server.url('/busy.wav')}"}}
        """,
        "slow.yaml",
    )
    server.delay = 5.0
    started = time.monotonic()
    [problem] = problems(slow)
    assert time.monotonic() - started < 4.5  # the server would take 5 s
    assert problem == (
        f"slow.yaml:9:10: prompts.busy.url: cannot fetch {server.url('/busy.wav')}: "
        "timed out: no answer within 0.5 s"
    )
    server.delay = 0.0
    big = config_file(
        tmp_path,
        f"""\
        media:
          fetch: {{max_megabytes: 0.1}}
        prompts:
          goodbye: {{url: "{server.url('/big.wav')}"}}
        """,
        "big.yaml",
    )
    assert problems(big) == [
        f"big.yaml:9:13: prompts.goodbye.url: cannot fetch {server.url('/big.wav')}: "
        "file is 160044 bytes, more than the 0.1 MB limit"
    ]


def test_https_needs_a_trusted_certificate_or_the_configured_ca_bundle(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "cert.pem").write_text(CERT)
    (tls / "key.pem").write_text(KEY)
    srv = AudioServer(tls)
    try:
        srv.put("/busy.flac", tone(500, 1.0, 8000, "FLAC"), "audio/flac")
        prompt = f'prompts:\n  busy: {{url: "{srv.url("/busy.flac")}"}}\n'
        untrusted = config_file(tmp_path, prompt, "untrusted.yaml")
        [problem] = problems(untrusted)
        assert problem.startswith("untrusted.yaml:7:10: prompts.busy.url: cannot fetch https://")
        assert "TLS certificate not trusted" in problem
        trusted = config_file(
            tmp_path, "media:\n  fetch: {ca_bundle: tls/cert.pem}\n" + prompt, "trusted.yaml"
        )
        config = load_resolved(trusted)
        assert config.media.fetch.ca_bundle == tls / "cert.pem"
        prompts = config.resolved_prompts
        assert prompts is not None and abs(peak_hz(prompts.clip("busy")) - 500) < 5
        missing = config_file(
            tmp_path, "media:\n  fetch: {ca_bundle: nope.pem}\n" + prompt, "missing.yaml"
        )
        [problem] = problems(missing)
        assert problem.startswith("missing.yaml:7:11: media.fetch.ca_bundle: cannot load CA bundle")
    finally:
        srv.close()


def test_files_any_format_and_rate_relative_to_the_config(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    (sounds / "busy.ogg").write_bytes(tone(700, 1.0, 32000, "OGG", channels=2))
    (sounds / "music.wav").write_bytes(tone(250, 1.0, 11025, "WAV"))
    (sounds / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    path = config_file(
        tmp_path,
        """\
        media:
          hold_music: {file: sounds/music.wav}
        prompts:
          busy: {file: sounds/busy.ogg}
        """,
    )
    prompts = load_resolved(path).resolved_prompts
    assert prompts is not None
    assert abs(peak_hz(prompts.clip("busy")) - 700) < 5
    assert abs(len(prompts.clip("busy")) - 8000) <= 2
    music = np.concatenate([prompts.hold_music().next_frame() for _ in range(100)])
    assert abs(peak_hz(music) - 250) < 5
    bad = config_file(
        tmp_path,
        """\
        prompts:
          busy: {file: sounds/missing.wav}
          goodbye: {file: sounds/broken.wav}
        """,
        "bad.yaml",
    )
    found = problems(bad)
    assert found[0] == (
        "bad.yaml:7:10: prompts.busy.file: sounds/missing.wav: No such file or directory"
    )
    assert found[1].startswith(
        "bad.yaml:8:13: prompts.goodbye.file: sounds/broken.wav: cannot read audio"
    )


def test_text_prompts_in_a_language_without_a_voice_are_errors(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """\
        prompts:
          busy: {text: "Bitte warten.", language: xx}
          goodbye: {text: "Bye.", voice: no-such-voice}
          digits: {text: "Taste {digit}", language: zz}
        """,
    )
    found = problems(path)
    assert found == [
        "pbx.yaml:7:33: prompts.busy.language: no text-to-speech voice for language 'xx'; "
        "`espeak-ng --voices` lists the installed ones",
        "pbx.yaml:8:27: prompts.goodbye.voice: espeak-ng has no voice 'no-such-voice' "
        "(see `espeak-ng --voices`)",
        "pbx.yaml:9:35: prompts.digits.language: no text-to-speech voice for language 'zz'; "
        "`espeak-ng --voices` lists the installed ones",
    ]
    inherited = config_file(
        tmp_path, 'media:\n  language: xx\nprompts:\n  busy: {text: "Hallo"}\n', "lang.yaml"
    )
    [problem] = problems(inherited)
    assert problem.startswith("lang.yaml:9:10: prompts.busy.text: no text-to-speech voice for")
    assert problem.endswith("(the language comes from media.language)")


def test_default_prompts_digits_and_on_demand_text(tmp_path: Path) -> None:
    config = load_resolved(
        config_file(
            tmp_path,
            """\
            media:
              language: de
            prompts:
              goodbye: {text: "Auf Wiederhören."}
              digits: {text: "Sie haben {digit} gedrückt.", names: {"#": Raute, "*": Stern}}
            """,
        )
    )
    prompts = config.resolved_prompts
    assert prompts is not None and prompts.language == "de"
    assert set(prompts.names) == set(PROMPT_NAMES) >= {
        "unavailable", "busy", "not_found", "goodbye", "echo_test", "dtmf_test",
        "recording_paused", "recording_resumed",
    }
    for name in PROMPT_NAMES:
        assert len(prompts.clip(name)) > 0.3 * SAMPLE_RATE, name
    # Built-in defaults are English text whatever media.language says; overrides use it.
    assert config.prompts.busy.language == "en" and config.prompts.goodbye.language is None
    assert np.array_equal(prompts.clip("goodbye"), prompts.text_clip("Auf Wiederhören."))
    # Every key is read back, each differently; "#" with the name given for it.
    clips = {key: prompts.digit_clip(key) for key in "0123456789*#ABCD"}
    assert len({c.tobytes() for c in clips.values()}) == 16
    assert np.array_equal(clips["#"], prompts.text_clip("Sie haben Raute gedrückt."))
    assert prompts.digit("5").next_frame() is not None
    with pytest.raises(KeyError):
        prompts.digit_clip("E")
    with pytest.raises(KeyError, match="no prompt 'welcome'"):
        prompts.get("welcome")
    # Text on demand (IVR options, read-back) is rendered once, then served from memory.
    spoken = prompts.text("Für den Vertrieb drücken Sie 1.")
    assert spoken.total_samples > SAMPLE_RATE
    assert prompts.text_clip("Für den Vertrieb drücken Sie 1.") is prompts.text_clip(
        "Für den Vertrieb drücken Sie 1."
    )
    english = prompts.text_clip("Press one.", language="en")
    assert len(english) > 0.3 * SAMPLE_RATE
    with pytest.raises(TtsError, match="language 'xx'"):
        prompts.text("hello", language="xx")
    # The default hold music is the shipped one.
    music = prompts.hold_music().next_frame()
    assert np.array_equal(music, default_hold_music().next_frame())


def test_unknown_prompt_names_and_bad_shapes_are_config_errors(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """\
        media:
          hold_music: {text: "la la la"}
        prompts:
          welcome: {text: "Hello"}
          busy: "The line is busy."
          goodbye: {text: "Bye", url: "https://example.com/bye.wav"}
          not_found: {url: "ftp://example.com/x.wav"}
        users:
          - {id: a, extension: "1", password: p, dtmf_mode: pulse}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = [str(i).replace(f"{tmp_path}/", "") for i in caught.value.issues]
    assert found == [
        "pbx.yaml:7:3: media.hold_music: music cannot be text-to-speech; use default, "
        "{file: PATH} or {url: https://...}",
        "pbx.yaml:9:3: prompts.welcome: unknown key (allowed here: agent_logged_in, "
        "agent_logged_out, agent_not_member, agent_paused, agent_unpaused, busy, "
        "callback_confirmed, callback_connecting, callback_enter, callback_offer, digits, "
        "dtmf_test, echo_test, goodbye, invalid_choice, not_found, presence_available, "
        "presence_do_not_disturb, presence_offline, queue_closed, queue_full, queue_next, "
        "queue_position, queue_timeout, queue_wait, queue_wait_short, recording_paused, "
        "recording_resumed, unavailable)",
        "pbx.yaml:10:3: prompts.busy: expected {text: ...}, {file: PATH} or {url: https://...}, "
        "got 'The line is busy.'",
        "pbx.yaml:11:3: prompts.goodbye: give only one of text, file or url, not text and url",
        "pbx.yaml:12:15: prompts.not_found.url: expected an http:// or https:// URL, "
        "got 'ftp://example.com/x.wav'",
        "pbx.yaml:14:42: users[0].dtmf_mode: must be 'auto', 'rfc4733', 'info' or 'inband', "
        "got 'pulse'",
    ]


def test_an_unwritable_cache_falls_back_to_a_temporary_directory(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = config_file(tmp_path, "", "pbx.yaml")
    path.write_text(path.read_text().replace("recordings: rec", "cache: a-file/cache"))
    config = load_resolved(path)
    prompts = config.resolved_prompts
    assert prompts is not None and len(prompts.clip("busy")) > 0
    [warning] = prompts.warnings
    assert warning.key == "storage.cache"
    assert "using a temporary directory" in warning.message


def test_resolve_reuses_decoded_audio_of_unchanged_files(tmp_path: Path) -> None:
    (tmp_path / "busy.wav").write_bytes(tone(440, 1.0, 8000, "WAV"))
    config = load_config(config_file(tmp_path, "prompts:\n  busy: {file: busy.wav}\n"))
    first = resolve(config)
    again = resolve(config, first)
    assert again.clip("busy") is first.clip("busy")
    (tmp_path / "busy.wav").write_bytes(tone(880, 1.0, 8000, "WAV"))
    changed = resolve(config, again)
    assert abs(peak_hz(changed.clip("busy")) - 880) < 5


def test_pbx_check_reports_a_bad_prompt_with_file_and_line(
    tmp_path: Path, server: AudioServer
) -> None:
    path = config_file(
        tmp_path,
        f"""\
        prompts:
          busy: {{url: "{server.url('/missing.wav')}"}}
          goodbye: {{text: "Bye", language: xx}}
        """,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pbx", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:7:10: prompts.busy.url: cannot fetch {server.url('/missing.wav')}: "
        "HTTP 404 Not Found",
        f"{path}:8:26: prompts.goodbye.language: no text-to-speech voice for language 'xx'; "
        "`espeak-ng --voices` lists the installed ones",
    ]
    server.put("/missing.wav", tone(440, 1.0, 8000, "WAV"))
    path.write_text(path.read_text().replace(", language: xx", ""))
    result = subprocess.run(
        [sys.executable, "-m", "pbx", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {path}")


def options_status(port: int) -> str:
    """Send an OPTIONS to the PBX on ``port``; the status line of its answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        own = s.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(request.encode(), ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
    return data.decode().split("\r\n", 1)[0]


def test_the_running_pbx_reloads_prompts_and_keeps_the_cache(tmp_path: Path) -> None:
    srv = AudioServer()
    srv.put("/busy.wav", tone(440, 1.0, 8000, "WAV"))
    prompt = f'prompts:\n  busy: {{url: "{srv.url("/busy.wav")}"}}\n'
    try:
        with run_pbx(tmp_path, extra_top=prompt) as pbx:
            assert srv.requests == [("/busy.wav", None)]
            srv.put("/busy.wav", tone(880, 1.0, 8000, "WAV"))
            srv.delay = 3.0
            pbx.signal(signal.SIGHUP)
            # The download happens off the event loop: SIP is answered meanwhile.
            started = time.monotonic()
            assert options_status(pbx.port) == "SIP/2.0 200 OK"
            assert time.monotonic() - started < 2.5
            assert "config reloaded" not in pbx.log_text()
            pbx.wait_log("config reloaded")
            srv.delay = 0.0
            assert len(srv.requests) == 2 and srv.requests[1][1] is not None
            srv.close()
            pbx.signal(signal.SIGHUP)
            pbx.wait_log("using the copy fetched")
            deadline = time.monotonic() + 10
            while pbx.log_text().count("config reloaded") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pbx.log_text().count("config reloaded") == 2
            warning = next(line for line in pbx.log if "using the copy fetched" in line)
            assert f"{pbx.config_path}:" in warning and "prompts.busy.url" in warning
            # A prompt that was never fetched is refused; the PBX goes on as it was.
            pbx.config_path.write_text(
                pbx.config_path.read_text().replace("/busy.wav", "/other.wav")
            )
            pbx.signal(signal.SIGHUP)
            pbx.wait_log("reload refused")
            assert pbx.proc.poll() is None
    finally:
        srv.close()


def test_a_menu_the_ivr_engine_cannot_run_is_a_config_error(tmp_path: Path) -> None:
    from pbx.config import ConfigError
    from pbx.prompts import load_resolved

    path = tmp_path / "pbx.yaml"
    path.write_text(
        "sip:\n  listen: [\"udp:127.0.0.1:5070\"]\n  domain: pbx.test\n"
        f"storage:\n  recordings: {tmp_path}/rec\n"
        "users:\n  - {id: alice, extension: \"101\", password: a}\n"
        "ivr:\n  main:\n    welcome: {text: \"Hi.\"}\n    options:\n"
        "      \"1\":\n        label: Deep\n        menu:\n          options: {}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_resolved(path)
    assert any(issue.key == "ivr.main.options.1.menu" and "needs options" in issue.message
               for issue in caught.value.issues), str(caught.value)
