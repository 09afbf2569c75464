"""Records lessons: what the room hands over becomes packet logs, then a library entry.

The room drives it; nothing here listens to events or looks rooms up. `Recorder.open` starts a
lesson's recording; `LessonRecording.track` gives the subscriber for one track the teacher
publishes, and a teacher who reconnects asks again and gets the source's next generation;
`LessonRecording.finish` ends the lesson with its details and per-classroom quality summary.
The room owns the reconnect grace and the quality sampling, and decides (from the config)
whether the room's media is recorded at all.

Frames are written by the lesson's own thread (recorder/writer.py); a lesson that never sends
media leaves nothing in `<data-dir>/recordings/`. Once finished, the logs are remuxed into the
library off the event loop (recorder/remux.py) and removed; the quality summary is kept in
`<data-dir>/quality/<id>.json` for `ketang report`, whether the media was recorded or not.
`recover` publishes what a crash left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from monitoring import metrics
from recorder import remux
from recorder.library import Catalog
from recorder.packetlog import PacketLogWriter
from recorder.writer import QUEUE_BYTES, LessonWriter, OpenLog, TrackWriter

logger = logging.getLogger(__name__)

KINDS = ("video", "audio")
# What `ketang report` reads of a lesson, beside its classrooms (monitoring/report.py).
QUALITY_KEYS = ("id", "room", "title", "subject", "grade", "school", "teacher", "started", "ended")


def new_lesson_id(room: str, wall: float) -> str:
    """Readable and unique: the room, the start in UTC, and a random tail."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall))
    return f"{room[:60]}-{stamp}-{secrets.token_hex(3)}"


class Generations:
    """Counts each source's publications within a lesson: asking again for a kind the current
    publication already has starts the next one (the teacher reconnected)."""

    def __init__(self) -> None:
        self._current: dict[str, tuple[int, set[str]]] = {}

    def next(self, source: str, kind: str) -> int:
        """The generation a new `kind` track of `source` belongs to."""
        generation, kinds = self._current.get(source, (0, set()))
        if kind in kinds:
            generation, kinds = generation + 1, set()
        kinds.add(kind)
        self._current[source] = (generation, kinds)
        return generation


class LessonRecording:
    """One lesson: its meta, the generations of its sources and the writer of its media."""

    def __init__(
        self,
        meta: dict[str, Any],
        started: float,
        writer: LessonWriter | None,
        on_finish: Callable[[LessonRecording], None],
    ) -> None:
        self.meta = meta  # id, room, teacher, started; at the end the lesson's details too
        self.started = started  # loop time of the lesson's start
        self.writer = writer  # None when the room's media is not recorded
        self.tracks: list[TrackWriter] = []
        self.finished = False
        self._generations = Generations()
        self._on_finish = on_finish

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @property
    def dropped(self) -> int:
        """Frames lost because the disk was behind, over every track."""
        return sum(track.dropped for track in self.tracks)

    @property
    def write_errors(self) -> int:
        """Tracks whose log failed (a full disk): each logged once, the lesson counted once."""
        return len(self.writer.failed) if self.writer is not None else 0

    @property
    def problem(self) -> str | None:
        """Why the recording is failing, if it is (its disk is full or not writable)."""
        return self.writer.problem if self.writer is not None else None

    def track(self, source: str, kind: str) -> TrackWriter | None:
        """The subscriber for `kind` of the source's next publication; None when the media is
        not recorded or the lesson is over."""
        if source not in remux.SOURCES or kind not in KINDS:
            raise ValueError(f"no such track to record: {source} {kind}")
        if self.writer is None or self.finished:
            return None
        generation = self._generations.next(source, kind)
        writer = TrackWriter(self.writer, f"{source}-{kind}", generation, self.started)
        self.tracks.append(writer)
        return writer

    def finish(self, info: Mapping[str, Any], quality: list[dict[str, Any]]) -> None:
        """The lesson is over: its tracks stop taking frames and it is published in the
        background; returns at once. `info` is the lesson's title, subject, grade, school and
        teacher; `quality` the per-classroom summary (monitoring/quality.py)."""
        if self.finished:
            return
        self.finished = True
        for track in self.tracks:
            track.closed = True
        self.meta.update(info)
        self.meta["ended"] = time.time()
        self.meta["quality"] = quality
        if self.writer is not None:
            self.writer.update_meta(self.meta)
            self.writer.stop()
        self._on_finish(self)


class Recorder:
    """The lessons recorded on this relay, and their publishing into the catalog."""

    def __init__(
        self,
        data_dir: Path,
        catalog: Catalog,
        *,
        queue_bytes: int = QUEUE_BYTES,
        open_log: OpenLog = PacketLogWriter,
    ) -> None:
        self.root = data_dir / "recordings"
        self.quality_root = data_dir / "quality"
        self.catalog = catalog
        self.queue_bytes = queue_bytes  # per lesson
        self.open_log = open_log  # what writes one track's log, for tests to slow or break
        self.active: dict[str, LessonRecording] = {}  # by id, until published
        self.publishing: set[asyncio.Task[None]] = set()

    def open(
        self, room: str, teacher: str, record_media: bool, loop_time: float
    ) -> LessonRecording:
        """A lesson's recording, starting at `loop_time`; nothing touches the disk until its
        first frame is written, and nothing at all when `record_media` is false."""
        wall = time.time()
        lesson_id = new_lesson_id(room, wall)
        meta: dict[str, Any] = {"id": lesson_id, "room": room, "teacher": teacher, "started": wall}
        writer = None
        if record_media:
            writer = LessonWriter(self.root / lesson_id, meta, self.queue_bytes, self.open_log)
        recording = LessonRecording(meta, loop_time, writer, self._finished)
        self.active[lesson_id] = recording
        recorded = "recorded" if record_media else "not recorded"
        logger.info("lesson %s in room %s started, its media %s", lesson_id, room, recorded)
        return recording

    def _finished(self, recording: LessonRecording) -> None:
        task = asyncio.get_running_loop().create_task(self._complete(recording))
        self.publishing.add(task)
        task.add_done_callback(self.publishing.discard)

    async def _complete(self, recording: LessonRecording) -> None:
        """Once the writer thread has drained: keep the quality summary, publish the media."""
        writer = recording.writer
        try:
            if writer is not None:
                await asyncio.to_thread(writer.join)
            await asyncio.to_thread(self._keep_quality, recording.meta)
            if writer is not None and writer.wrote_media:
                await self.publish(writer.directory)
            elif writer is not None:  # no frame was written: nothing to keep
                await asyncio.to_thread(_remove, writer.directory)
        except Exception:  # a bug here must be seen; the logs stay for `recover`
            logger.exception("finishing lesson %s failed", recording.id)
            metrics.count_recorder_error()
        finally:
            self.active.pop(recording.id, None)

    async def publish(self, directory: Path) -> None:
        """Remux a recording into the library (in a thread), then drop its logs."""
        lesson_id = directory.name
        try:
            entry = self.catalog.store.entry(lesson_id)
            meta = await asyncio.to_thread(remux.publish, directory, entry)
        except remux.EmptyRecording:
            logger.info("recording %s holds no media; removed", lesson_id)
            await asyncio.to_thread(_remove, directory)
            return
        except Exception:
            logger.exception("publishing lesson %s failed; its logs are kept", lesson_id)
            metrics.count_recorder_error()
            return
        self.catalog.add(meta)
        await asyncio.to_thread(_remove, directory)
        duration, size = meta["duration"], meta["size"]
        logger.info("lesson %s published: %.0f s, %d bytes", lesson_id, duration, size)

    async def recover(self) -> None:
        """Publish the recordings a crash left behind (no open lesson owns them)."""
        for directory in await asyncio.to_thread(self._leftovers):
            logger.info("recovering recording %s", directory.name)
            await self.publish(directory)

    def _leftovers(self) -> list[Path]:
        """Recording directories with logs; those without (no frame was ever written) are
        removed. Runs in a thread: `in self.active` is one atomic look-up, and a lesson is in
        `active` before its writer can create its directory."""
        try:
            directories = sorted(self.root.iterdir()) if self.root.exists() else []
        except OSError as error:  # not a directory, not readable: lessons say so when they fail
            logger.error("recordings in %s cannot be read: %s", self.root, error)
            return []
        found = []
        for directory in directories:
            if not directory.is_dir() or directory.name in self.active:
                continue
            if any(directory.glob("*.log")):
                found.append(directory)
            else:
                _remove(directory)
        return found

    async def close(self) -> None:
        """Shutdown: finish what the rooms left open (without their details), then wait for
        every writer thread and every publishing to end."""
        for recording in list(self.active.values()):
            recording.finish({}, [])
        await asyncio.gather(*self.publishing, return_exceptions=True)

    def _keep_quality(self, meta: Mapping[str, Any]) -> None:
        """The lesson's quality summary where `ketang report` finds it, media or not."""
        summary = {k: meta.get(k) for k in QUALITY_KEYS} | {"classrooms": meta.get("quality", [])}
        try:
            self.quality_root.mkdir(parents=True, exist_ok=True)
            path = self.quality_root / f"{meta['id']}.json"
            path.write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
        except OSError as error:
            logger.error("lesson %s: quality summary not kept: %s", meta["id"], error)
            metrics.count_recorder_error()


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
