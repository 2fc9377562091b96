"""Stereo recordings of answered calls (caller on the left channel, callee on the right).

The relay hands each RTP packet to the call's :class:`media.callrecording.RecordingMixer`
(a list append); once a second the mixed audio goes to a single writer thread, so file I/O never
runs on the event loop and each file's writes stay in order.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from media.callrecording import RATE, RecordingMixer
from media.recorder import StereoRecorder
from media.udp import RelayHandle

logger = logging.getLogger(__name__)


class _Active:
    __slots__ = ("mixer", "path", "recorder", "relay")

    def __init__(self, path: Path, recorder: StereoRecorder, mixer: RecordingMixer,
                 relay: RelayHandle) -> None:
        self.path = path
        self.recorder = recorder
        self.mixer = mixer
        self.relay = relay


class Recordings:
    def __init__(self, directory: Path, fmt: str = "wav") -> None:
        self.directory = directory
        self.format = fmt
        self._active: dict[str, _Active] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")

    def __len__(self) -> int:
        return len(self._active)

    def start(self, call_id: str, relay: RelayHandle, now: float) -> Path | None:
        """Start recording ``call_id`` (at its answer); None if the file cannot be created."""
        day = datetime.now(UTC)
        path = self.directory / f"{day:%Y/%m/%d}" / f"{call_id}.{self.format}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            recorder = StereoRecorder(path, format=self.format)  # type: ignore[arg-type]
        except Exception:
            logger.exception("call %s: cannot create recording %s", call_id, path)
            return None
        mixer = RecordingMixer(now)
        relay.set_tap(mixer.feed)
        self._active[call_id] = _Active(path, recorder, mixer, relay)
        return path

    def tick(self, now: float) -> None:
        """Hand what every recording received up to (nearly) ``now`` to the writer thread."""
        for rec in self._active.values():
            left, right = rec.mixer.take(now)
            if len(left):
                self._writer.submit(_write, rec.recorder, left, right)

    def stop(self, call_id: str) -> tuple[str, float] | None:
        """Finish a call's recording; returns its path and length in seconds."""
        rec = self._active.pop(call_id, None)
        if rec is None:
            return None
        rec.relay.set_tap(None)
        left, right = rec.mixer.take_all()
        seconds = rec.mixer._written / RATE
        self._writer.submit(_finish, rec.recorder, left, right)
        return str(rec.path), seconds

    def close(self) -> Future[None]:
        for call_id in list(self._active):
            self.stop(call_id)
        return self._writer.submit(lambda: None)

    def shutdown(self) -> None:
        self._writer.shutdown(wait=True)


def _write(recorder: StereoRecorder, left: object, right: object) -> None:
    try:
        recorder.write(left, right)  # type: ignore[arg-type]
    except Exception:
        logger.exception("writing recording %s failed", recorder.path)


def _finish(recorder: StereoRecorder, left: object, right: object) -> None:
    try:
        if len(left):  # type: ignore[arg-type]
            recorder.write(left, right)  # type: ignore[arg-type]
        recorder.close()
    except Exception:
        logger.exception("closing recording %s failed", recorder.path)
