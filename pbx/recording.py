"""Stereo recordings of calls (caller on the left channel, callee on the right).

The relay appends each RTP packet of a recorded call to a list of the call's
:class:`media.callrecording.RecordingMixer` (no call per packet). Once a second
(:meth:`Recordings.tick`) the mixers place and decode what arrived and the audio goes to a
single writer thread, so file I/O never runs on the event loop and each file's writes stay in
order.

That once-a-second work is spread out: inside a running event loop, :meth:`Recordings.tick`
handles a slice of the recordings at a time and lets the loop relay packets between slices, so
a thousand recorded calls never hold the loop for more than about a millisecond at a time (a
single pass would stall the relay for tens of milliseconds every second: jitter on every call).

The call controller drives it: :meth:`Recordings.start` (at the answer, or on demand),
:meth:`Recordings.pause` / :meth:`Recordings.resume` (silence in the file, the timeline keeps
running), :meth:`Recordings.stop`. The recording follows the relay session, so replacing the
far phone of a call (``set_remote`` on a leg, perhaps a new codec) keeps one file and one
timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from media.callrecording import RATE, RecordingMixer
from media.recorder import (
    RecordingError,
    RecordingFormat,
    StereoRecorder,
    repair_recording,
)
from media.udp import RelayHandle

logger = logging.getLogger(__name__)

#: How long one slice of a tick may hold the event loop, in seconds (a recording takes about
#: 50-100 µs a second of audio); packets that arrive meanwhile wait at most this long.
SLICE_SECONDS = 0.0005
#: Ticks (seconds of audio for every recorded call) the writer thread may fall behind before
#: new audio is dropped instead of queued.
MAX_BACKLOG = 120

_Chunk = list[tuple[StereoRecorder, NDArray[np.int16], NDArray[np.int16]]]


class _Active:
    __slots__ = ("mixer", "path", "recorder", "relay")

    def __init__(self, path: Path, recorder: StereoRecorder, mixer: RecordingMixer,
                 relay: RelayHandle) -> None:
        self.path = path
        self.recorder = recorder
        self.mixer = mixer
        self.relay = relay


class Recordings:
    """The PBX's call recordings: one stereo file per call under ``directory/YYYY/MM/DD``."""

    def __init__(self, directory: Path, fmt: str = "wav") -> None:
        if fmt not in ("wav", "flac"):
            raise ValueError(f"recording format must be 'wav' or 'flac', got {fmt!r}")
        self.directory = directory
        self.format: RecordingFormat = "wav" if fmt == "wav" else "flac"
        self._active: dict[str, _Active] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder",
                                          initializer=_below_the_loop)
        self._queue: list[str] = []  # calls still to be handled in the current tick
        # Files of ended calls the writer thread is still finishing (their last second of
        # audio, the final header): a download waits for them (:meth:`finished`).
        self._finishing: dict[str, Future[None]] = {}
        # Seconds of audio handed to the writer thread and not yet written.
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._stalled = False
        self._queue_now = 0.0
        self._scheduled: asyncio.Handle | None = None
        #: Asked before each new recording; False: the call is not recorded.
        self.gate: Callable[[str], bool] | None = None

    def __len__(self) -> int:
        return len(self._active)

    def start(self, call_id: str, relay: RelayHandle, now: float) -> Path | None:
        """Start recording ``call_id`` from ``now`` (at its answer, or on demand later);
        returns the file's path, or None if the file cannot be created. A call already being
        recorded keeps its recording (its path is returned)."""
        active = self._active.get(call_id)
        if active is not None:
            return active.path
        if self.gate is not None and not self.gate(call_id):
            return None  # the recording quota is reached (pbx.governance)
        day = datetime.now(UTC)
        path = self.directory / f"{day:%Y/%m/%d}" / f"{call_id}.{self.format}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            recorder = StereoRecorder(path, format=self.format)
        except Exception:
            logger.exception("call %s: cannot create recording %s", call_id, path)
            return None
        mixer = RecordingMixer(now)
        relay.set_recorder(mixer)
        self._active[call_id] = _Active(path, recorder, mixer, relay)
        return path

    def is_recording(self, call_id: str) -> bool:
        """True while ``call_id`` is being recorded (paused or not)."""
        return call_id in self._active

    def is_paused(self, call_id: str) -> bool:
        """True while ``call_id``'s recording is paused."""
        active = self._active.get(call_id)
        return active is not None and active.mixer.paused

    def pause(self, call_id: str, now: float) -> bool:
        """Record silence on both channels from ``now`` on (the file's timeline keeps running;
        none of the paused audio reaches the disk). False if not recording or already paused."""
        active = self._active.get(call_id)
        return active is not None and active.mixer.pause(now)

    def resume(self, call_id: str, now: float) -> bool:
        """Record the call's audio again from ``now`` on. False if not recording or not
        paused."""
        active = self._active.get(call_id)
        return active is not None and active.mixer.resume(now)

    def tick(self, now: float) -> None:
        """Hand what every recording received up to (nearly) ``now`` to the writer thread.

        Inside a running event loop the recordings are handled in slices of at most
        :data:`SLICE_SECONDS`, one slice per loop iteration; elsewhere all at once.
        """
        self._queue = list(self._active)
        self._queue_now = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            while self._queue:
                self._run_slice()
        elif self._scheduled is None:
            self._scheduled = loop.call_soon(self._next_slice)

    def stop(self, call_id: str) -> tuple[str, float] | None:
        """Finish a call's recording; returns its path and length in seconds."""
        rec = self._active.pop(call_id, None)
        if rec is None:
            return None
        rec.relay.set_recorder(None)
        left, right = rec.mixer.take_all()
        seconds = rec.mixer.written / RATE
        path = str(rec.path)
        done = self._writer.submit(_finish, rec.recorder, left, right)
        self._finishing[path] = done
        # (The writer thread.) A later recording of the same path keeps its own entry.
        done.add_done_callback(
            lambda f: self._finishing.pop(path, None) if self._finishing.get(path) is f
            else None)
        return path, seconds

    async def finished(self, path: str, timeout: float = 10.0) -> None:
        """Wait until the recording at ``path`` is finished, if it is being finished (a call
        that just ended: its ``recording.ready`` event may reach a CRM before the file's last
        second is written)."""
        done = self._finishing.get(path)
        if done is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), timeout)

    def recover(self, call_id: str, started: datetime,
                until: datetime) -> tuple[str, float] | None:
        """The recording a killed PBX left of ``call_id`` (recorded from some time between
        ``started`` and ``until``, UTC), made whole again: its path and length, or None.
        Blocking: for the start-up, before calls are taken."""
        day = started.replace(tzinfo=UTC).date()
        last = until.replace(tzinfo=UTC).date()
        while day <= last:
            for fmt in (self.format, "wav", "flac"):
                path = self.directory / f"{day:%Y/%m/%d}" / f"{call_id}.{fmt}"
                if path.is_file():
                    try:
                        return str(path), repair_recording(path)
                    except RecordingError as exc:
                        logger.warning("call %s: %s", call_id, exc)
                        return None
            day += timedelta(days=1)
        return None

    def close(self) -> Future[None]:
        """Stop every recording; the future is done once all files are finished."""
        for call_id in list(self._active):
            self.stop(call_id)
        self._queue = []
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        return self._writer.submit(lambda: None)

    def shutdown(self) -> None:
        """Wait for the writer thread to finish its work and end it."""
        self._writer.shutdown(wait=True)

    def _next_slice(self) -> None:
        self._scheduled = None
        self._run_slice()
        if self._queue:
            self._scheduled = asyncio.get_running_loop().call_soon(self._next_slice)

    def _run_slice(self) -> None:
        chunk: _Chunk = []
        queue = self._queue
        # The queue is consumed from its end; the order of the recordings does not matter.
        deadline = time.perf_counter() + SLICE_SECONDS
        done = 0
        while queue and not (done and time.perf_counter() > deadline):
            call_id = queue.pop()
            done += 1
            rec = self._active.get(call_id)
            if rec is None:
                continue  # stopped meanwhile
            try:
                left, right = rec.mixer.take(self._queue_now)
            except Exception:
                logger.exception("call %s: mixing the recording failed", call_id)
                continue
            if len(left):
                chunk.append((rec.recorder, left, right))
        if chunk:
            with self._backlog_lock:
                backlog = self._backlog
                if backlog < MAX_BACKLOG:
                    self._backlog += 1
            if backlog >= MAX_BACKLOG:
                # The disk has stopped taking writes (a hung mount): drop this second rather
                # than grow without limit; say so once per stall.
                if not self._stalled:
                    self._stalled = True
                    logger.error("recordings: the disk is not keeping up (%d seconds queued); "
                                 "dropping audio until it does", backlog)
                return
            self._stalled = False
            future = self._writer.submit(_write, chunk)
            future.add_done_callback(self._written_one)

    def _written_one(self, _future: object) -> None:
        with self._backlog_lock:
            self._backlog -= 1


def _below_the_loop() -> None:
    """Run the writer thread below the event loop: a relayed packet must never wait for a
    file write. A real-time policy (a PBX started with ``chrt``) is not inherited, and the
    thread's nice value is raised by 5 (Linux applies both per thread)."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5))
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: the writer runs at the loop's priority


def _write(chunk: _Chunk) -> None:
    for recorder, left, right in chunk:
        try:
            recorder.write(left, right)
        except Exception:
            logger.exception("writing recording %s failed", recorder.path)


def _finish(recorder: StereoRecorder, left: NDArray[np.int16], right: NDArray[np.int16]) -> None:
    try:
        if len(left):
            recorder.write(left, right)
        recorder.close()
    except Exception:
        logger.exception("closing recording %s failed", recorder.path)
