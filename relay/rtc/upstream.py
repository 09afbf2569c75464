"""One track the teacher sends, as the relay receives it: frames in, fan-out to down tracks.

An `Upstream` lives as long as one teacher receiver. When the teacher reconnects, a new
`Upstream` replaces it, and the down tracks switch to it at its first keyframe; the identity of
the `Upstream` object is the origin the core forwarder keys on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver

from monitoring import metrics
from relay.config import MediaConfig
from relay.core.codecs import (
    VP8_CHUNK_SIZE,
    is_vp8_keyframe,
    split,
)
from relay.core.estimator import RateMeter
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame
from relay.core.keyframes import KeyframeCoalescer
from relay.core.ladder import Rendition as RenditionSpec
from relay.core.model import FeedKey
from relay.rtc import hooks
from relay.rtc.jitter import EagerJitterBuffer
from relay.rtc.ladder import Ladder
from relay.rtc.remote import RemoteLadder

logger = logging.getLogger(__name__)


class Upstream(FrameSource):
    """One teacher track's encoded frames, fanned out to its subscribers: classrooms' down
    tracks, the recorder's track writer and the rendition ladder."""

    def __init__(
        self,
        room: str,
        feed: FeedKey,
        receiver: RTCRtpReceiver,
        media: MediaConfig,
        renditions: tuple[RenditionSpec, ...] = (),
    ) -> None:
        super().__init__(media.gop_cache_frames if feed.kind == "video" else None)
        self.room = room
        self.feed = feed
        self.video = feed.kind == "video"
        self.coalescer = KeyframeCoalescer(media.keyframe_min_interval)
        self.last_frame_at: float | None = None
        self.meter = RateMeter()
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[None]] = set()
        # an edge's pull replaces it with the rungs it takes from the origin (rtc/remote.py)
        self.ladder: Ladder | RemoteLadder | None = Ladder(self, renditions) if self.video else None
        hooks.tap_frames(receiver, self._on_frame)
        original = hooks.jitter_buffer_of(receiver)
        self._buffer = EagerJitterBuffer(
            capacity=original.capacity,
            is_video=self.video,
            on_missing=self._nack,
            clock=self._loop.time,
        )
        hooks.release_frames_early(receiver, self._buffer)

    def __repr__(self) -> str:
        return f"<Upstream {self.room} {self.feed.source} {self.feed.kind}>"

    def _on_frame(self, codec: Any, jitter_frame: Any) -> None:
        """Called by the tap on the event loop for every complete frame; never raises.

        The receiver takes one frame per packet; after a lost packet came back, the frames
        it held up are complete too, and are released here at once, not a packet apiece."""
        try:
            self._fan_out(bytes(jitter_frame.data), int(jitter_frame.timestamp))
            while self.video and (held := self._buffer.next_complete()) is not None:
                timestamp = hooks.map_timestamp(self._receiver, held.timestamp)
                self._fan_out(bytes(held.data), timestamp)
        except Exception:  # the packet path must not break the receiver
            logger.exception("fan-out failed in room %s", self.room)
            metrics.count_drop("fanout_error")

    def _fan_out(self, data: bytes, timestamp: int) -> None:
        """Hand one frame to every subscriber."""
        now = self._loop.time()
        keyframe = is_vp8_keyframe(data) if self.video else True
        self.last_frame_at = now
        chunks = split(data, VP8_CHUNK_SIZE) if self.video else (data,)
        self.meter.add(len(data), now)
        if self.emit(Frame(self, data, timestamp, keyframe, chunks), now):
            logger.debug("a subscriber of %s in room %s failed", self.feed, self.room)
            metrics.count_drop("subscriber_error")
        metrics.count_ingest(self.feed.kind, len(data))

    def _nack(self, ssrc: int, lost: list[int]) -> None:
        """Ask the teacher again for packets that block the jitter buffer."""
        self._track_task(hooks.send_nack(self._receiver, ssrc, lost))

    def _track_task(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def request_keyframe(self) -> None:
        """Ask the teacher for a keyframe, coalesced with everybody else's asks."""
        if not self.video or not self.coalescer.request(self._loop.time()):
            return
        task = hooks.request_keyframe(self._receiver)
        if task is not None:
            metrics.count_keyframe_request(self.feed.source)
            self._track_task(task)

    @property
    def bitrate(self) -> int:
        """Bits per second the teacher sends on this track, as measured over the last second."""
        return int(self.meter.rate)

    def close(self) -> None:
        """Tell every subscriber (the ladder among them) the track ended; the receiver itself
        is stopped with its peer connection."""
        super().close()
