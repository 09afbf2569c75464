"""One live room as everyone outside it reads it: frozen, taken at one moment.

The room (relay/runtime.py) owns its state; `RoomRuntime.snapshot(now)` copies what metrics,
the pages' event stream, the admin API and the quality history need into these values, so
none of them walks sessions, peer connections or rate controllers of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Lesson:
    """What the teacher says the lesson is; shown to classrooms and kept with the recording."""

    title: str = ""
    subject: str = ""
    grade: str = ""
    school: str = ""


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source the teacher publishes."""

    source: str  # camera | screen
    teacher: str
    kinds: tuple[str, ...]
    bitrate: int  # bits per second received from the teacher, all its tracks


@dataclass(frozen=True, slots=True)
class ClassroomView:
    """One classroom connection as the relay and its own page see it."""

    session: str
    name: str  # the classroom's token name (its school)
    label: str  # `name`, made unique within the room for metric labels
    state: str  # the peer connection's state (new, connecting, connected, ...)
    layers: Mapping[str, str]  # video slot ("video"; "camera"/"screen" with two) -> layer
    estimate: float  # bits per second the link carries, 0 before any feedback
    sent: float  # bits per second
    loss: float  # 0..1
    rtt: float  # seconds, 0 before the first receiver report
    jitter: float  # seconds, from its receiver reports
    nacks: int  # distinct packets it asked to be resent
    plis: int  # keyframe requests it sent
    qoe: Mapping[str, float] = field(default_factory=dict)  # its page's getStats report

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def main_layer(self) -> str | None:
        """The layer of its first video slot, the one the quality history keeps."""
        return next(iter(self.layers.values()), None)


@dataclass(frozen=True, slots=True)
class Recording:
    """Whether the lesson is being recorded, as the teacher and the admin see it."""

    state: str  # off (no lesson, or a room not recorded) | on | failing
    problem: str = ""  # why it is failing (a full or unwritable disk), for people to act on


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """Everything known about one room at one moment."""

    room: str
    live: bool  # a source is published
    lesson: Lesson
    sources: tuple[SourceView, ...]
    classrooms: tuple[ClassroomView, ...]
    publishers: int
    uplink: Mapping[str, float] = field(default_factory=dict)  # the teacher page's report
    recording: Recording = field(default_factory=lambda: Recording("off"))
