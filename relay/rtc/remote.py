"""Renditions an edge node takes from the room's origin instead of making them itself.

Measured on the project's machine (docs/cluster.md): decoding the 720p lesson and encoding the
default rungs costs 0.19 of a core for 180p alone and 0.39 for 360p and 180p, once per node that
runs a ladder; receiving a rung the origin already makes costs an edge a few ms/s, and the
origin one more stream per edge. So the ladder runs once, at the origin, and an edge pulls
each rung its classrooms use: one more WHEP pull per rung (`?quality=<rung>`, camera and
screen slots), opened when a classroom of the edge first needs the rung and closed `LINGER`
seconds after the last one left it.

A `RemoteRendition` is the `FrameSource` classrooms subscribe to, whatever pull currently
feeds it: it re-emits that pull's frames as its own (the forwarder switches on the source
object) on one continuous timeline across pulls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from relay.core.codecs import VIDEO_CLOCK_RATE
from relay.core.fanout import FrameSource, Subscriber
from relay.core.forwarder import Frame
from relay.core.ladder import STILL
from relay.core.ladder import Rendition as RenditionSpec
from relay.core.model import FeedKey
from relay.core.renditions import LINGER

logger = logging.getLogger(__name__)

# RTP ticks between the last frame of one pull and the first of the next: one frame at 30 fps.
FRAME_TICKS = VIDEO_CLOCK_RATE // 30


class RungFeed(Protocol):
    """What a pulled rung gives: one source of frames per video slot (camera, screen)."""

    def track(self, feed: FeedKey) -> FrameSource | None: ...

    async def close(self) -> None: ...


RungOpener = Callable[[str], Awaitable[RungFeed]]


class RemoteRendition(FrameSource):
    """One rung of one video feed, as an edge's classrooms see it."""

    def __init__(self, spec: RenditionSpec, feed: FeedKey, rungs: RungPulls) -> None:
        super().__init__(0)  # as a local rendition: a switching classroom asks for a keyframe
        self.spec = spec
        self.name = spec.name
        self.feed = feed
        self._rungs = rungs
        self._upstream: FrameSource | None = None
        self._offset: int | None = None  # added to the pull's timestamps; None: not yet known
        self._last = 0  # the newest timestamp emitted

    @property
    def bitrate(self) -> int:
        return self.spec.bitrate

    def subscribe(self, subscriber: Subscriber) -> None:
        super().subscribe(subscriber)
        self._rungs.wanted(self.name)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        super().unsubscribe(subscriber)
        self._rungs.maybe_unwanted(self.name)

    def attach(self, upstream: FrameSource | None) -> None:
        """Take frames from a new pull of the rung (None: the pull ended)."""
        if self._upstream is not None:
            self._upstream.unsubscribe(self)
        self._upstream, self._offset = upstream, None
        if upstream is not None:
            upstream.subscribe(self)
            upstream.request_keyframe()

    def push(self, frame: Frame, now: float) -> None:
        """A frame of the pulled rung: emitted as this rendition's, on its own timeline."""
        if self._offset is None:
            self._offset = self._last + FRAME_TICKS - frame.timestamp if self.frames else 0
        timestamp = frame.timestamp + self._offset
        self._last = timestamp
        self.emit(Frame(self, frame.data, timestamp, frame.keyframe, frame.chunks), now)

    def source_closed(self, source: FrameSource) -> None:
        if source is self._upstream:
            self._upstream = None

    def request_keyframe(self) -> None:
        """Ask the origin's encoder for a keyframe (through the pull's PLI)."""
        if self._upstream is not None:
            self._upstream.request_keyframe()


class RemoteLadder:
    """The rungs of one edge video feed; stands in for a `Ladder` (relay/rtc/ladder.py)."""

    def __init__(self, feed: FeedKey, specs: tuple[RenditionSpec, ...], rungs: RungPulls):
        # the screen's 2 fps still is made at the origin only for its own classrooms
        self.renditions = {
            s.name: RemoteRendition(s, feed, rungs) for s in specs if s.name != STILL
        }
        rungs.ladders.append(self)

    def rendition(self, name: str) -> RemoteRendition | None:
        return self.renditions.get(name)


class RungPulls:
    """The rung pulls of one edge room's lesson, shared by its camera and screen ladders."""

    def __init__(self, open_rung: RungOpener) -> None:
        self._open = open_rung
        self.ladders: list[RemoteLadder] = []
        self._pulls: dict[str, RungFeed] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}
        self._linger: dict[str, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    def _renditions(self, rung: str) -> list[RemoteRendition]:
        found = [ladder.rendition(rung) for ladder in self.ladders]
        return [r for r in found if r is not None]

    def wanted(self, rung: str) -> None:
        """A classroom subscribed to the rung: pull it, unless that is under way."""
        handle = self._linger.pop(rung, None)
        if handle is not None:
            handle.cancel()
        if self._closed or rung in self._pulls or rung in self._opening:
            return
        self._opening[rung] = asyncio.ensure_future(self._start(rung))

    def maybe_unwanted(self, rung: str) -> None:
        """Nobody here watches the rung any more: end its pull after LINGER."""
        if any(len(r) for r in self._renditions(rung)) or rung in self._linger:
            return
        loop = asyncio.get_running_loop()
        self._linger[rung] = loop.call_later(LINGER, self._stop_soon, rung)

    async def _start(self, rung: str) -> None:
        try:
            pull = await self._open(rung)
        except Exception as error:  # the origin refused or went away: the next want retries
            logger.warning("pulling rung %s failed: %s", rung, error)
            return
        finally:
            self._opening.pop(rung, None)
        if self._closed:
            await pull.close()
            return
        self._pulls[rung] = pull
        for rendition in self._renditions(rung):
            rendition.attach(pull.track(rendition.feed))

    def lost(self, rung: str) -> None:
        """The rung's pull died: detach it; a classroom still on it pulls it again."""
        self._pulls.pop(rung, None)
        for rendition in self._renditions(rung):
            rendition.attach(None)
        if any(len(r) for r in self._renditions(rung)):
            self.wanted(rung)

    def _stop_soon(self, rung: str) -> None:
        self._linger.pop(rung, None)
        task = asyncio.ensure_future(self._stop(rung))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, rung: str) -> None:
        pull = self._pulls.pop(rung, None)
        for rendition in self._renditions(rung):
            rendition.attach(None)
        if pull is not None:
            await pull.close()

    async def close(self) -> None:
        """The lesson's pull ended: end every rung pull with it."""
        self._closed = True
        for handle in self._linger.values():
            handle.cancel()
        for task in self._opening.values():
            task.cancel()
        for rung in list(self._pulls):
            await self._stop(rung)
