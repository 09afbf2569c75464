"""Records every live lesson: a subscriber to the teacher's upstreams, writing packet logs.

It listens to the room model's events. A lesson starting opens `<data-dir>/recordings/<id>/`;
each source the teacher publishes taps its upstreams, whose frames are appended to one log per
track as they arrive (recorder/packetlog.py: no decoding, a flush a second). A teacher who
reconnects within `reconnect_grace` continues the same recording as a new generation. When
the grace runs out the recording is published into the library off the event loop
(recorder/remux.py) and its logs removed. Recordings left by a crash are published at start.

It also samples every classroom's quality every few seconds (monitoring/quality.py) and keeps
the lesson's per-classroom summary in its meta and in `<data-dir>/quality/`, for
`ketang report`; rooms whose media is not recorded still get their summary.
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
from monitoring.quality import SAMPLE_SECONDS, LessonQuality, QualitySample
from recorder.library import Catalog
from recorder.packetlog import RECORD_OVERHEAD, PacketLogWriter, Record
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
    quality: LessonQuality = field(default_factory=LessonQuality)

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
                metrics.count_recorded(len(record.data) + RECORD_OVERHEAD)
            except Exception:  # a full disk must not break the live lesson
                logger.exception("recording %s: write failed", self.id)
                metrics.count_recorder_error()

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

    def records(self, room: str) -> bool:
        """Whether the room's media is recorded; its quality summary is kept either way."""
        return self.config.record and room not in self.skip

    def on_event(self, event: model.Event) -> None:
        if isinstance(event, model.SourceStarted):
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
        if runtime is None or not self.records(event.room):
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

    def sample_quality(self) -> None:
        """One quality sample of every classroom of every live recorded lesson."""
        now = asyncio.get_running_loop().time()
        for room, recording in self.active.items():
            runtime = self.registry.find(room)
            if runtime is None or recording.closing is not None:
                continue
            for player in runtime.players.values():
                rate = player.rate
                if rate is None or player.pc.connectionState != "connected":
                    continue
                link = rate.view(now)
                sample = QualitySample(
                    estimate=link.estimate,
                    loss=link.loss,
                    layer=next(iter(link.layers.values()), None),  # the first video slot
                    freeze_seconds=player.qoe.get("totalFreezesDuration", 0.0),
                )
                recording.quality.add(player.name, sample)

    async def run_sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            try:
                self.sample_quality()
            except Exception:  # a bug here must not stop recording
                logger.exception("quality sampling failed")

    def _finish(self, room: str) -> None:
        """The grace is over: close the logs and publish in the background."""
        recording = self.active.pop(room)
        recording.close()
        recording.meta.update(self.lesson_info(room))
        recording.meta["ended"] = time.time()
        recording.meta["quality"] = recording.quality.summary()
        _write_meta(recording)
        self._keep_quality(recording.meta)
        if not self.records(room):
            shutil.rmtree(recording.directory, ignore_errors=True)
            return
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
            metrics.count_recorder_error()
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
                if not any(directory.glob("*.log")):  # a lesson whose media was not recorded
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                logger.info("recovering recording %s", directory.name)
                await self.publish(directory)

    async def close(self) -> None:
        """Shutdown: publish every open recording now, and wait for publishing to end."""
        for room, recording in list(self.active.items()):
            if recording.closing is not None:
                recording.closing.cancel()
            self._finish(room)
        await asyncio.gather(*self.publishing, return_exceptions=True)

    def _keep_quality(self, meta: dict[str, Any]) -> None:
        """The lesson's quality summary where `ketang report` finds it, media or not."""
        directory = self.root.parent / "quality"
        directory.mkdir(parents=True, exist_ok=True)
        keys = ("id", "room", "title", "subject", "grade", "school", "teacher", "started", "ended")
        summary = {k: meta.get(k) for k in keys} | {"classrooms": meta["quality"]}
        text = json.dumps(summary, ensure_ascii=False)
        (directory / f"{meta['id']}.json").write_text(text, encoding="utf-8")


def _write_meta(recording: LessonRecording) -> None:
    path = recording.directory / "meta.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(recording.meta, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)
