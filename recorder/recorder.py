"""Records every live lesson: a subscriber to the teacher's upstreams, writing packet logs.

It listens to the room model's events. A lesson starting opens `<data-dir>/recordings/<id>/`;
each source the teacher publishes taps its upstreams, whose frames are appended to one log per
track as they arrive (recorder/packetlog.py: no decoding, a flush a second). A teacher who
reconnects within `reconnect_grace` continues the same recording as a new generation. When
the grace runs out the recording is published into the library off the event loop
(recorder/remux.py) and its logs removed. Recordings left by a crash are published at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring import metrics
from recorder.library import Catalog
from recorder.packetlog import PacketLogWriter, Record
from recorder.remux import publish
from relay.config import RecordingConfig
from relay.core import model
from relay.core.forwarder import Frame
from relay.core.model import FeedKey
from relay.registry import Registry

logger = logging.getLogger(__name__)

LessonInfo = Callable[[str], dict[str, str]]


@dataclass
class LessonRecording:
    """One lesson being written: its directory, logs and the generation of each source."""

    id: str
    room: str
    directory: Path
    started: float  # loop time of the lesson's start
    meta: dict[str, Any]
    writers: dict[FeedKey, PacketLogWriter] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    closing: asyncio.TimerHandle | None = None

    def tap(self, feed: FeedKey) -> Callable[[Frame, float], None]:
        """The upstream tap writing `feed`'s frames under the source's current generation."""
        writer = self.writers.get(feed)
        if writer is None:
            writer = self.writers[feed] = PacketLogWriter(
                self.directory / f"{feed.source}-{feed.kind}.log"
            )
        generation = self.generations[feed.source]

        def write(frame: Frame, now: float) -> None:
            try:
                record = Record(
                    generation, now - self.started, frame.timestamp, frame.keyframe, frame.data
                )
                writer.append(record)
            except Exception:  # a full disk must not break the live lesson
                logger.exception("recording %s: write failed", self.id)
                metrics.count_drop("recording_error")

        return write

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def new_lesson_id(room: str, wall: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall))
    return f"{room[:60]}-{stamp}-{secrets.token_hex(3)}"


class Recorder:
    """Every live lesson of this relay, recorded; finished ones published to the catalog."""

    def __init__(
        self,
        config: RecordingConfig,
        data_dir: Path,
        registry: Registry,
        catalog: Catalog,
        lesson_info: LessonInfo,
    ) -> None:
        self.config = config
        self.root = data_dir / "recordings"
        self.registry = registry
        self.catalog = catalog
        self.lesson_info = lesson_info
        self.active: dict[str, LessonRecording] = {}
        self.publishing: set[asyncio.Task[None]] = set()
        self.skip = {r.strip() for r in config.record_skip_rooms.split(",") if r.strip()}
        registry.listeners.append(self.on_event)

    def on_event(self, event: model.Event) -> None:
        if not self.config.record:
            return
        if isinstance(event, model.SourceStarted) and event.room not in self.skip:
            self._source_started(event)
        elif isinstance(event, model.LessonEnded) and event.room in self.active:
            recording = self.active[event.room]
            loop = asyncio.get_running_loop()
            delay = self.config.reconnect_grace
            recording.closing = loop.call_later(delay, self._finish, event.room)

    def _source_started(self, event: model.SourceStarted) -> None:
        recording = self.active.get(event.room) or self._open(event)
        if recording.closing is not None:  # the teacher came back: same lesson, next generation
            recording.closing.cancel()
            recording.closing = None
        recording.generations[event.source] = recording.generations.get(event.source, -1) + 1
        runtime = self.registry.find(event.room)
        if runtime is None:
            return
        for kind in event.kinds:
            upstream = runtime.upstreams.get(FeedKey(event.source, kind))
            if upstream is not None:
                upstream.taps.append(recording.tap(FeedKey(event.source, kind)))
                upstream.request_keyframe()  # the recording starts at a keyframe
        recording.meta.setdefault("teacher", event.teacher)

    def _open(self, event: model.SourceStarted) -> LessonRecording:
        wall = time.time()
        lesson_id = new_lesson_id(event.room, wall)
        directory = self.root / lesson_id
        directory.mkdir(parents=True)
        meta = {"id": lesson_id, "room": event.room, "teacher": event.teacher, "started": wall}
        recording = LessonRecording(
            lesson_id, event.room, directory, asyncio.get_running_loop().time(), meta
        )
        _write_meta(recording)
        self.active[event.room] = recording
        logger.info("recording lesson %s in room %s", lesson_id, event.room)
        return recording

    def _finish(self, room: str) -> None:
        """The grace is over: close the logs and publish in the background."""
        recording = self.active.pop(room)
        recording.close()
        recording.meta.update(self.lesson_info(room))
        recording.meta["ended"] = time.time()
        _write_meta(recording)
        task = asyncio.ensure_future(self.publish(recording.directory))
        self.publishing.add(task)
        task.add_done_callback(self.publishing.discard)

    async def publish(self, directory: Path) -> None:
        """Remux a recording into the library (in a thread), then drop its logs."""
        lesson_id = directory.name
        try:
            entry = self.catalog.store.entry(lesson_id)
            meta = await asyncio.to_thread(publish, directory, entry)
        except Exception:
            logger.exception("publishing lesson %s failed; its logs are kept", lesson_id)
            return
        self.catalog.add(meta)
        shutil.rmtree(directory, ignore_errors=True)
        duration, size = meta["duration"], meta["size"]
        logger.info("lesson %s published: %.0f s, %d bytes", lesson_id, duration, size)

    async def recover(self) -> None:
        """Publish recordings a crash left behind (none of them is live now)."""
        if not self.root.exists():
            return
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and directory.name not in {r.id for r in self.active.values()}:
                logger.info("recovering recording %s", directory.name)
                await self.publish(directory)

    async def close(self) -> None:
        """Shutdown: publish every open recording now, and wait for publishing to end."""
        for room, recording in list(self.active.items()):
            if recording.closing is not None:
                recording.closing.cancel()
            self._finish(room)
        await asyncio.gather(*self.publishing, return_exceptions=True)


def _write_meta(recording: LessonRecording) -> None:
    path = recording.directory / "meta.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(recording.meta, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)
