"""One classroom's copy of one feed: a MediaStreamTrack that hands encoded frames to aiortc.

Frames leave through `relay.rtc.sender.PacketLoop`, which only packetizes them: no codec work
per classroom. A queued frame wakes the process's fan-out pass (`on_queued`), which drains
every woken track in one go. The loop keeps a 128-packet history and answers the classroom's
NACKs from it, so retransmissions never reach the teacher. aiortc's sender ignores PLI for
pre-encoded media, so `hooks.on_keyframe_request` routes the classroom's PLI here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from monitoring import metrics
from relay.core.codecs import AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE
from relay.core.fanout import FrameSource
from relay.core.forwarder import Forwarder, Frame, Verdict


class DownTrack(MediaStreamTrack):
    """Bounded, keyframe-gated queue from upstream frames to one classroom sender: a
    subscriber of the teacher's track or of one of its renditions (relay.core.fanout)."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__()
        self.kind = kind
        video = kind == "video"
        clock_rate = VIDEO_CLOCK_RATE if video else AUDIO_CLOCK_RATE
        self.forwarder = Forwarder(video, clock_rate, limit)
        self._listening: set[FrameSource] = set()
        self.on_queued: Callable[[], None] | None = None  # the packet loop's wake-up
        # frames are queued only once the sender runs, i.e. the classroom is connected
        self._sending = False
        self.plis = 0  # keyframe requests from the classroom

    def retarget(self, source: FrameSource | None) -> None:
        """Carry `source` from its next keyframe on; None stops this track's media."""
        self.forwarder.retarget(source)
        if source is not None:
            source.subscribe(self)
            self._listening.add(source)
            if self.forwarder.wants_keyframe and self._sending:
                self._start_from(source)
        self._prune()

    def _start_from(self, source: FrameSource) -> None:
        """Replay the source's short GOP if it has one, else ask for a keyframe."""
        cached = source.gop.replay()
        if not cached:
            source.request_keyframe()
            return
        now = asyncio.get_running_loop().time()
        for frame in cached:
            self.push(frame, now)

    def push(self, frame: Frame, now: float) -> None:
        """Offer one upstream frame; called by FrameSource's fan-out, never raises."""
        if not self._sending:
            return  # not connected yet: queueing now would only send stale frames later
        current = self.forwarder.current
        verdict = self.forwarder.push(frame, now)
        if verdict is Verdict.QUEUED:
            if self.forwarder.current is not current:
                self._prune()
            if self.on_queued is not None:
                self.on_queued()
            return
        metrics.count_drop(verdict.value)
        if verdict is not Verdict.NOT_TARGET:
            cast("FrameSource", frame.origin).request_keyframe()

    def picture_lost(self) -> None:
        """The classroom sent PLI/FIR: ask upstream, coalesced, for a keyframe."""
        self.plis += 1
        origin = self.forwarder.target or self.forwarder.current
        if origin is not None:
            cast("FrameSource", origin).request_keyframe()

    def source_closed(self, source: FrameSource) -> None:
        """The source went away (teacher left, rendition closed); stop listening to it."""
        self._listening.discard(source)
        self.forwarder.forget(source)

    def begin(self) -> None:
        """The classroom's connection is up: start from the freshest keyframe, not a backlog."""
        if self._sending:
            return
        self._sending = True
        target = self.forwarder.target
        if target is not None:
            self._start_from(cast("FrameSource", target))

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        """aiortc's MediaStreamTrack interface, which its own sender loop reads: the relay
        replaces that loop (relay/rtc/sender.py), so nothing reads frames this way."""
        raise MediaStreamError("a down track's frames leave through its packet loop")

    def stop(self) -> None:
        """End the track: detach from upstream and release a sender waiting for a frame."""
        super().stop()
        self.forwarder.retarget(None)
        self._prune()
        self.on_queued = None

    def _prune(self) -> None:
        """Stop listening to upstreams this track neither forwards nor switches to."""
        keep = {self.forwarder.current, self.forwarder.target}
        for source in [s for s in self._listening if s not in keep]:
            source.unsubscribe(self)
            self._listening.discard(source)
