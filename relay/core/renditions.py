"""When the relay makes renditions: the ladder's policy, decided frame by frame without I/O.

The shell (`relay.rtc.ladder`) decodes and encodes on a worker thread; this module decides,
for each teacher frame, what that worker does with it:

- nothing while no classroom listens to any rendition, not even decoding; a rendition keeps
  encoding `LINGER` seconds after its last listener left, and the worker stops after that;
- the decoder must start at a keyframe and see every frame after it, so after a gap it is
  rebuilt from the teacher's cached GOP, or the teacher is asked for a keyframe;
- a worker that falls behind first skips encoding (`MAX_BACKLOG`), then drops frames and
  resyncs (`MAX_QUEUE`), so renditions run late by a few frames at most, never by seconds;
- a classroom's keyframe request for a rendition is honoured on its next encoded frame.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from relay.core.forwarder import Frame
from relay.core.keyframes import GopCache

# Seconds a rendition keeps encoding after its last listener left: a classroom trying the next
# rung and reverting within seconds would otherwise restart the encoder (and a keyframe) twice.
LINGER = 10.0
# Teacher frames waiting for the worker before new ones skip encoding (still decoded, so the
# decoder never loses its references): about 130 ms at 30 fps.
MAX_BACKLOG = 4
# Beyond this many waiting frames the worker is hopelessly behind: drop, resync at a keyframe.
MAX_QUEUE = 30


@dataclass(frozen=True, slots=True)
class Job:
    """One teacher frame for the worker: always decoded, so the decoder keeps its references."""

    frame: Frame
    encode: tuple[str, ...] = ()  # renditions to encode it for, in ladder order; () decodes only
    keyframes: frozenset[str] = frozenset()  # those of `encode` that must be a keyframe
    keep: frozenset[str] = frozenset()  # encoders to keep; the worker retires the others first


@dataclass(frozen=True, slots=True)
class Idle:
    """Nobody listens to any rendition (or the ladder closed): the frame is not even decoded."""

    stop_worker: bool  # the last linger ran out: end the worker thread and its codec state


@dataclass(frozen=True, slots=True)
class Resync:
    """The decoder has a gap: rebuild it from the cached GOP, or ask for a keyframe."""

    jobs: tuple[Job, ...]  # the cached GOP, decode-only but the last; () asks for a keyframe


@dataclass(frozen=True, slots=True)
class Drop:
    """The worker is hopelessly behind: skip this frame (a counted drop) and resync later."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Hand the frame to the worker."""

    job: Job


Plan = Idle | Resync | Drop | Submit


class LadderPolicy:
    """What the rendition worker does with each frame of one teacher video source."""

    def __init__(self, names: tuple[str, ...], linger: float = LINGER) -> None:
        self.names = names  # the ladder's renditions, highest first
        self.linger = linger  # seconds an encoder outlives its last listener
        self._last_listened = dict.fromkeys(names, -math.inf)
        self._keyframe_wanted = set(names)  # a new encoder starts with one anyway
        self.queued = 0  # frames handed to the worker whose result has not come back
        self.synced = False  # the decoder has seen a keyframe and every frame since
        self.closed = False
        self._running = False  # a worker exists: started by the first job, ended by Idle

    def request_keyframe(self, name: str) -> None:
        """A classroom needs a keyframe of `name`: cheap, local, never reaches the teacher."""
        self._keyframe_wanted.add(name)

    def active(self, listened: Collection[str], now: float) -> tuple[str, ...]:
        """Renditions listened to now or within `linger` seconds, in ladder order; listening
        is what keeps an encoder, so `listened` must be told on every frame."""
        for name in listened:
            self._last_listened[name] = now
        return tuple(n for n in self.names if now - self._last_listened[n] <= self.linger)

    def plan(self, frame: Frame, listened: Collection[str], gop: GopCache, now: float) -> Plan:
        """What to do with one teacher frame, given the renditions with listeners right now
        and the source's cached GOP (read only when the decoder needs a restart)."""
        active = self.active(listened, now)
        if not active or self.closed:
            return self._idle(active)
        if not self.synced:
            if not frame.keyframe:
                return self._resync(gop, active)
            self.synced = True
        if self.queued >= MAX_QUEUE:
            self.synced = False
            return Drop()
        return Submit(self._job(frame, active))

    def delivered(self, ok: bool) -> bool:
        """A worker result came back; True when its frames should be fanned out. A failed
        decode leaves the decoder's references unknown, so the next frame resyncs."""
        self.queued -= 1
        if not ok:
            self.synced = False
        return ok and not self.closed

    def close(self) -> None:
        """The source ended: plan no more work; the shell stops the worker itself."""
        self.closed = True
        self._running = False

    def _idle(self, active: tuple[str, ...]) -> Idle:
        """Skip the frame; the decoder must then restart at a keyframe."""
        self.synced = False
        stop = self._running and not active
        if stop:
            self._running = False
        return Idle(stop)

    def _resync(self, gop: GopCache, active: tuple[str, ...]) -> Resync:
        """Decode the cached GOP up to this frame (its last) and encode only that last one."""
        cached = gop.replay()
        if not cached:
            return Resync(())
        self.synced = True
        *earlier, last = cached
        decode_only = [self._job(frame, ()) for frame in earlier]
        return Resync((*decode_only, self._job(last, active)))

    def _job(self, frame: Frame, active: tuple[str, ...]) -> Job:
        """Queue one frame at the worker; it is encoded only while the backlog is short, and
        a keyframe request is used up only by a frame that is encoded."""
        self._running = True
        encode = active if self.queued < MAX_BACKLOG else ()
        keyframes = frozenset(n for n in encode if n in self._keyframe_wanted)
        self._keyframe_wanted -= keyframes
        self.queued += 1
        return Job(frame, encode, keyframes, frozenset(active))
