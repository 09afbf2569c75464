"""The one fan-out primitive: a source of encoded frames that owns its subscribers.

Every producer of frames is a `FrameSource`: the teacher's upstream track, each rendition the
relay makes of it, and (scale-out) an edge node's pull from the origin. Everything downstream
of it is a `Subscriber`: a classroom's down track, the recorder's track writer, the rendition
ladder itself. Subscribers never touch a source's internals; they subscribe, unsubscribe,
take frames in `push` and are told once when the source ends. The frame's `origin` is the
source object itself, which is what a classroom's forwarder switches on.

Pure: no I/O and no clock; `now` comes in with each frame. Pushing must not raise, so one
subscriber's bug cannot starve the others: what `push` raises is returned as a count for the
shell to log and meter, never propagated.
"""

from __future__ import annotations

from typing import Protocol

from relay.core.forwarder import Frame
from relay.core.keyframes import GopCache


class Subscriber(Protocol):
    """What a source hands frames to."""

    def push(self, frame: Frame, now: float) -> None:
        """Take one frame; called on the event loop, must return quickly."""

    def source_closed(self, source: FrameSource) -> None:
        """The source ended (teacher left, rendition stopped): stop expecting its frames."""


class FrameSource:
    """Emits frames to its subscribers and keeps its short GOP for joiners."""

    def __init__(self, gop_frames: int | None) -> None:
        """`gop_frames`: the longest GOP kept for joiners; None keeps none (audio, where
        every packet decodes on its own)."""
        self._subscribers: dict[Subscriber, None] = {}  # insertion-ordered set
        self.gop = GopCache(gop_frames or 0)
        self._keeps_gop = gop_frames is not None
        self.frames = 0  # frames emitted so far
        self.closed = False

    def subscribe(self, subscriber: Subscriber) -> None:
        """Receive every frame from now on; subscribing twice is once."""
        if not self.closed:
            self._subscribers[subscriber] = None

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop receiving frames; unknown subscribers are ignored."""
        self._subscribers.pop(subscriber, None)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Who receives frames now, in subscription order."""
        return tuple(self._subscribers)

    def __len__(self) -> int:
        """Subscribers right now."""
        return len(self._subscribers)

    def emit(self, frame: Frame, now: float) -> int:
        """Hand one frame to every subscriber, in subscription order; returns how many raised
        (a bug in one of them, which must not cost the others their frame)."""
        self.frames += 1
        if self._keeps_gop:
            self.gop.add(frame)
        failed = 0
        for subscriber in tuple(self._subscribers):
            try:
                subscriber.push(frame, now)
            except Exception:
                failed += 1
        return failed

    def request_keyframe(self) -> None:
        """Ask whoever produces the frames for a keyframe (a PLI, or an encoder flag)."""

    def close(self) -> None:
        """The source ended: tell each subscriber once, then forget them."""
        self.closed = True
        subscribers, self._subscribers = tuple(self._subscribers), {}
        for subscriber in subscribers:
            subscriber.source_closed(self)
