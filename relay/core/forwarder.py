"""What one classroom receives on one down track: switching, gating, queueing and timing.

A down track is fed by up to two upstream feeds at once: the one it forwards now and the one
it is switching to. This class decides, frame by frame, without I/O:

- switching happens only at a keyframe of the target (video), so the classroom's decoder never
  sees an inter frame that references a picture it never got;
- the queue towards the classroom's sender is bounded; a classroom that cannot keep up loses
  its backlog and waits for the next keyframe, instead of slowing the others or drifting late;
- the outgoing RTP clock stays continuous across switches and teacher reconnects, because
  aiortc maps every new upstream receiver's first frame to timestamp 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete encoded frame from upstream, as the ingest tap hands it over."""

    origin: Hashable  # identity of the upstream generation: changes when the teacher reconnects
    data: bytes
    timestamp: int  # in the codec clock, rebased by aiortc to start at 0 per receiver
    keyframe: bool  # always True for audio: every Opus packet decodes on its own
    chunks: tuple[bytes, ...] = ()  # `data` cut into RTP payload pieces, shared by classrooms


class OutFrame(NamedTuple):
    """A frame ready for the classroom's sender, on that down track's continuous clock (a
    tuple: one is made per frame per classroom, and a frozen dataclass costs three times as
    much to make)."""

    data: bytes
    timestamp: int
    chunks: tuple[bytes, ...] = ()
    keyframe: bool = False  # video: nothing sent before it is needed to decode what follows


class Verdict(Enum):
    """What happened to a pushed frame; drops carry the reason counted in metrics."""

    QUEUED = "queued"
    NOT_TARGET = "not_target"  # from an origin this track neither forwards nor switches to
    AWAIT_KEYFRAME = "await_keyframe"  # a switch or a recovery is waiting for a keyframe
    OVERFLOW = "overflow"  # the classroom fell behind; backlog dropped


class Timeline:
    """Maps each origin's timestamps onto one continuous outgoing clock."""

    __slots__ = ("_clock_rate", "_last_now", "_last_out", "_offset", "_origin")

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._origin: Hashable = None
        self._offset = 0
        self._last_out: int | None = None
        self._last_now = 0.0

    def map(self, origin: Hashable, timestamp: int, now: float) -> int:
        """Outgoing timestamp; on a new origin, continue from the last one by wall-clock time."""
        if origin != self._origin:
            self._origin = origin
            if self._last_out is None:
                self._offset = -timestamp
            else:
                gap = max(int((now - self._last_now) * self._clock_rate), 1)
                self._offset = self._last_out + gap - timestamp
        out = timestamp + self._offset
        self._last_out, self._last_now = out, now
        return out


class Forwarder:
    """Per-down-track decisions: which frames reach classrooms, and when to ask for keyframes."""

    __slots__ = (
        "_current",
        "_flush_backlog",
        "_gated",
        "_limit",
        "_queue",
        "_target",
        "_timeline",
        "_video",
    )

    def __init__(self, video: bool, clock_rate: int, limit: int) -> None:
        self._video = video
        self._limit = limit
        # a keyframe that finds this many frames queued skips them: latency over completeness
        self._flush_backlog = max(limit // 3, 2)
        self._queue: deque[OutFrame] = deque()
        self._timeline = Timeline(clock_rate)
        self._current: Hashable = None  # origin being forwarded
        self._target: Hashable = None  # origin to switch to at its next keyframe
        self._gated = False  # current origin lost frames: wait for its next keyframe

    @property
    def wants_keyframe(self) -> bool:
        """True while a switch or a recovery waits for a keyframe from upstream."""
        return self._video and (self._target is not None or self._gated)

    @property
    def current(self) -> Hashable:
        """The origin being forwarded now, or None."""
        return self._current

    @property
    def target(self) -> Hashable:
        """The origin being switched to, or None."""
        return self._target

    def retarget(self, origin: Hashable) -> None:
        """Switch to `origin` at its next keyframe (audio: at once); None stops forwarding."""
        if origin is None:
            self._current = self._target = None
            self._queue.clear()
        elif origin != self._current or self._gated:
            self._target = origin

    def forget(self, origin: Hashable) -> None:
        """An origin ended: stop forwarding it, but keep switching to any other target."""
        if self._current == origin:
            self._current, self._gated = None, False
            self._queue.clear()
        if self._target == origin:
            self._target = None

    def push(self, frame: Frame, now: float) -> Verdict:
        """Offer a frame from upstream; the verdict says whether it was queued and why not."""
        if frame.origin != self._current or self._gated:
            verdict = self._enter(frame)
            if verdict is not Verdict.QUEUED:
                return verdict
        if len(self._queue) >= self._limit:
            return self._overflow()
        if frame.keyframe and self._video and len(self._queue) >= self._flush_backlog:
            self._queue.clear()
        timestamp = self._timeline.map(frame.origin, frame.timestamp, now)
        self._queue.append(OutFrame(frame.data, timestamp, frame.chunks, frame.keyframe))
        return Verdict.QUEUED

    def pop(self) -> OutFrame | None:
        """Next frame for the sender, oldest first."""
        return self._queue.popleft() if self._queue else None

    def take(self) -> list[OutFrame]:
        """Every queued frame, oldest first, leaving the queue empty."""
        frames = list(self._queue)
        self._queue.clear()
        return frames

    def __len__(self) -> int:
        return len(self._queue)

    def _enter(self, frame: Frame) -> Verdict:
        """Decide on a frame that would start (or restart) forwarding from its origin."""
        if frame.origin != self._target and frame.origin != self._current:
            return Verdict.NOT_TARGET
        if self._video and not frame.keyframe:
            return Verdict.AWAIT_KEYFRAME
        if frame.origin != self._current:
            self._queue.clear()  # nothing of the old origin may follow the new one's keyframe
        self._current, self._gated = frame.origin, False
        if self._target == frame.origin:
            self._target = None
        return Verdict.QUEUED

    def _overflow(self) -> Verdict:
        """Drop the backlog; video then waits for a keyframe, audio just carries on."""
        self._queue.clear()
        if self._video:
            self._gated = True
        return Verdict.OVERFLOW
