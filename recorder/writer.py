"""A lesson's packet logs, written on a thread of its own so a slow disk never slows the lesson.

The teacher's frames reach the recorder on the event loop, in the same fan-out that feeds every
classroom. `TrackWriter.push` only puts a record into its lesson's queue; the lesson's writer
thread appends the records to the logs (recorder/packetlog.py), creating the lesson's
directory, its meta.json and each log on the first frame, and flushing every FLUSH_SECONDS.

The queue is bounded in bytes. A disk that stalls for longer than the queue holds costs
recorded frames (dropped and counted), never forwarded ones. A write that fails (a full disk)
ends that track's log where it failed: what was written before stays readable and is published.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from monitoring import metrics
from recorder.packetlog import FLUSH_SECONDS, RECORD_OVERHEAD, PacketLogWriter, Record
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame

logger = logging.getLogger(__name__)

# Bytes of frames one lesson may hold in memory while its disk is behind: 64 MiB is about six
# minutes of a 1.5 Mbit/s lesson (64 * 2**20 * 8 / 1.5e6 = 358 s) before frames are dropped.
QUEUE_BYTES = 64 * 2**20
# Drops closer together than this are one burst, logged and counted once: a disk only just
# too slow would otherwise log every other frame.
BURST_SECONDS = 5.0


class LogWriter(Protocol):
    """What the writer thread needs of one track's log: PacketLogWriter, or a test's stand-in."""

    def append(self, record: Record) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


OpenLog = Callable[[Path], LogWriter]


class RecordQueue(Protocol):
    """Where a TrackWriter puts its records: the lesson's LessonWriter."""

    @property
    def directory(self) -> Path: ...

    def put(self, track: str, record: Record) -> bool: ...


Queued = tuple[str, Record]  # the track's name ("camera-video") and its record


def write_meta(directory: Path, meta: Mapping[str, Any]) -> None:
    """Replace meta.json whole, so a crash leaves the old one or the new one, never half."""
    path = directory / "meta.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)


def size_of(record: Record) -> int:
    """Bytes a record costs in the queue and on disk."""
    return len(record.data) + RECORD_OVERHEAD


class LessonWriter:
    """One lesson's logs and the thread that writes them; only `put` runs on the packet path.

    The lock is held for a deque operation at a time, never around I/O, so `put` cannot wait
    for the disk."""

    def __init__(
        self,
        directory: Path,
        meta: Mapping[str, Any],
        limit: int = QUEUE_BYTES,
        open_log: OpenLog = PacketLogWriter,
    ) -> None:
        self.directory = directory
        self.limit = limit
        self.queued = 0  # bytes put and not written yet (the one being written included)
        self.appended = 0  # records appended to the logs
        self.failed: set[str] = set()  # tracks whose log failed: each logged once
        self.problem: str | None = None  # the last failure, in a line people can act on
        self._open_log = open_log
        self._meta = dict(meta)
        self._queue: deque[Queued] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._logs: dict[str, LogWriter] = {}
        self._created = False
        name = f"recorder-{directory.name}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def wrote_media(self) -> bool:
        """Whether any frame reached a log: a lesson without one has nothing to publish."""
        return self.appended > 0

    def put(self, track: str, record: Record) -> bool:
        """Queue a record for the thread; False, and nothing queued, when full or stopped."""
        size = size_of(record)
        with self._ready:
            if self._stopping or self.queued + size > self.limit:
                return False
            self.queued += size
            self._queue.append((track, record))
            self._ready.notify()
        return True

    def update_meta(self, meta: Mapping[str, Any]) -> None:
        """The meta the thread writes next (at the first frame, and when it stops)."""
        with self._ready:
            self._meta = dict(meta)

    def stop(self) -> None:
        """No more records: the thread writes what is queued, the meta, closes the logs, ends."""
        with self._ready:
            self._stopping = True
            self._ready.notify()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after `stop`); blocks, so call it off the event loop."""
        self._thread.join(timeout)

    def _run(self) -> None:
        """Drain the queue until stopped, flushing every FLUSH_SECONDS; then close."""
        flushed = time.monotonic()
        while True:
            batch, stopping = self._take()
            try:
                self._write(batch)
                if time.monotonic() - flushed >= FLUSH_SECONDS:
                    self._flush()
                    flushed = time.monotonic()
            except Exception:  # a bug here must be seen, and must not end the recording
                logger.exception("recording %s: the writer failed", self.directory.name)
                metrics.count_recorder_error()
            if stopping and not batch:
                break
        self._close()

    def _take(self) -> tuple[deque[Queued], bool]:
        """Everything queued, after waiting at most FLUSH_SECONDS for something to arrive."""
        with self._ready:
            if not self._queue and not self._stopping:
                self._ready.wait(FLUSH_SECONDS)
            batch, self._queue = self._queue, deque()
            return batch, self._stopping

    def _write(self, batch: deque[Queued]) -> None:
        for track, record in batch:
            self._append(track, record)
            with self._ready:
                self.queued -= size_of(record)

    def _append(self, track: str, record: Record) -> None:
        """One record into its track's log; never raises."""
        if track in self.failed:
            return
        try:
            log = self._logs.get(track)
            if log is None:
                log = self._open(track)
            log.append(record)
        except Exception as error:  # a full disk costs the rest of this track, not the thread
            self._fail(track, error)
            return
        self.appended += 1
        metrics.count_recorded(size_of(record))

    def _open(self, track: str) -> LogWriter:
        """A track's log, on its first frame; the lesson's first frame also creates the
        directory and its meta.json, which recovery needs before any log exists."""
        if not self._created:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_meta(self.directory, self._snapshot())
            self._created = True
        log = self._logs[track] = self._open_log(self.directory / f"{track}.log")
        return log

    def _fail(self, track: str, error: Exception) -> None:
        """Give up on a track's log, logged once; its file closed as it stands."""
        self.failed.add(track)
        self.problem = str(getattr(error, "strerror", None) or error)[:200]
        lesson = self.directory.name
        detail = not isinstance(error, OSError)  # a bug gets its traceback, a full disk not
        logger.error(
            "recording %s: writing %s failed, the rest of that track is lost: %s",
            lesson,
            track,
            error,
            exc_info=detail,
        )
        if len(self.failed) == 1:  # the lesson's recording is failing: counted once
            metrics.count_recorder_error()
        log = self._logs.pop(track, None)
        if log is not None:
            with contextlib.suppress(Exception):
                log.close()

    def _flush(self) -> None:
        for track, log in list(self._logs.items()):
            try:
                log.flush()
            except Exception as error:  # a full disk often shows at the flush, not the write
                self._fail(track, error)

    def _close(self) -> None:
        """The lesson ended: every log closed, then its final meta."""
        for track, log in list(self._logs.items()):
            try:
                log.close()
            except Exception as error:
                self._fail(track, error)
        self._logs.clear()
        if not self._created:
            return
        try:
            write_meta(self.directory, self._snapshot())
        except Exception as error:
            logger.error("recording %s: meta.json not written: %s", self.directory.name, error)
            metrics.count_recorder_error()

    def _snapshot(self) -> dict[str, Any]:
        with self._ready:
            return dict(self._meta)


class TrackWriter:
    """One track of one generation, subscribed to its FrameSource: `push` only queues.

    Video starts at a keyframe, and starts again at one after frames were dropped: an inter
    frame without the pictures it refers to cannot be decoded. Meanwhile it asks the frame's
    source for one (the source coalesces the asks)."""

    def __init__(self, writer: RecordQueue, track: str, generation: int, started: float) -> None:
        self.writer = writer
        self.track = track  # "<source>-<kind>", the log's name
        self.generation = generation
        self.started = started  # loop time of the lesson's start: arrivals count from it
        self.dropped = 0  # frames lost to a full queue, and video frames until a keyframe after
        self.closed = False
        self._video = track.endswith("-video")
        self._awaiting_keyframe = self._video
        self._overflowing = False  # the last frame offered to the queue was dropped
        self._last_drop = -math.inf

    def push(self, frame: Frame, now: float) -> None:
        """Queue the frame for the writer thread; never waits and never raises."""
        try:
            if self.closed or (self._awaiting_keyframe and not self._keyframe(frame)):
                return
            arrival = now - self.started
            record = Record(self.generation, arrival, frame.timestamp, frame.keyframe, frame.data)
            if self.writer.put(self.track, record):
                self._overflowing = False
            else:
                self._drop(now)
        except Exception:  # the packet path never raises
            logger.debug("recording %s: push failed", self.track, exc_info=True)
            metrics.count_recorder_error()

    def source_closed(self, source: FrameSource) -> None:
        """This generation of the track ended; the next publication gets a new TrackWriter."""
        self.closed = True

    def _keyframe(self, frame: Frame) -> bool:
        """Whether a waiting video track may start at this frame; asks for one if not."""
        if frame.keyframe:
            self._awaiting_keyframe = False
            return True
        if self._overflowing:
            self.dropped += 1
        if isinstance(frame.origin, FrameSource):
            frame.origin.request_keyframe()
        return False

    def _drop(self, now: float) -> None:
        """The queue is full: lose this frame; a burst of drops is logged and counted once."""
        self.dropped += 1
        self._awaiting_keyframe = self._video
        self._overflowing = True
        burst, self._last_drop = now - self._last_drop >= BURST_SECONDS, now
        if burst:
            metrics.count_recorder_error()
            lesson = self.writer.directory.name
            logger.warning("recording %s: %s dropped, the disk is behind", lesson, self.track)
