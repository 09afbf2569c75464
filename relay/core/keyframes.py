"""Upstream keyframe-request coalescing: many classrooms, one teacher uplink.

Every joining classroom, every rendition switch and every picture loss at a classroom wants a
keyframe. Forwarded one by one they become a PLI storm that makes the teacher's encoder spend
its bitrate on keyframes (mediasoup#232, jitsi-videobridge PR #2448). So one coalescer per
upstream video track lets at most one request through per `min_interval`.
"""

from __future__ import annotations

import math

from relay.core.forwarder import Frame


class KeyframeCoalescer:
    """Lets a keyframe request go upstream at most once per `min_interval` seconds."""

    __slots__ = ("_last_sent", "absorbed", "min_interval", "sent")

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._last_sent = -math.inf
        self.sent = 0
        self.absorbed = 0

    def request(self, now: float) -> bool:
        """True when a PLI should go upstream now; otherwise the request is absorbed."""
        if now - self._last_sent >= self.min_interval:
            self._last_sent = now
            self.sent += 1
            return True
        self.absorbed += 1
        return False


class GopCache:
    """The frames since the last keyframe, while few enough to replay to a joining classroom.

    A classroom can start decoding at a keyframe followed by every frame after it. Replaying a
    short GOP gives a joiner a picture without a new keyframe from the teacher; a long one
    would burst too much into a weak link, so past `max_frames` the cache empties until the
    next keyframe.
    """

    __slots__ = ("_frames", "max_frames")

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._frames: list[Frame] = []

    def add(self, frame: Frame) -> None:
        """Record a frame from upstream."""
        if frame.keyframe:
            self._frames = [frame]
        elif self._frames:
            if len(self._frames) < self.max_frames:
                self._frames.append(frame)
            else:
                self._frames = []

    def replay(self) -> tuple[Frame, ...]:
        """The cached GOP, keyframe first; empty when there is none to offer."""
        return tuple(self._frames)
