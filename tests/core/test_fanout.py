"""The one fan-out primitive: who gets which frame, and what a broken subscriber costs."""

from __future__ import annotations

import pytest

from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame


def frame(number: int, keyframe: bool = False) -> Frame:
    return Frame(origin="teacher", data=bytes([number]), timestamp=3000 * number, keyframe=keyframe)


class Recorder:
    """A subscriber that notes what it was handed, and may be made to fail."""

    def __init__(self, fails: bool = False) -> None:
        self.frames: list[tuple[int, float]] = []
        self.closed: list[FrameSource] = []
        self.fails = fails

    def push(self, frame: Frame, now: float) -> None:
        self.frames.append((frame.data[0], now))
        if self.fails:
            raise RuntimeError("a subscriber's bug")

    def source_closed(self, source: FrameSource) -> None:
        self.closed.append(source)


def test_every_subscriber_gets_each_frame_from_when_it_subscribed_in_order() -> None:
    source, early, late = FrameSource(15), Recorder(), Recorder()
    source.subscribe(early)
    source.emit(frame(0, keyframe=True), now=1.0)
    source.subscribe(late)
    source.subscribe(late)  # twice is once
    source.emit(frame(1), now=1.033)
    assert early.frames == [(0, 1.0), (1, 1.033)]
    assert late.frames == [(1, 1.033)]
    assert source.subscribers == (early, late) and len(source) == 2 and source.frames == 2


def test_a_failing_subscriber_is_counted_and_costs_the_others_nothing() -> None:
    source, broken, healthy = FrameSource(None), Recorder(fails=True), Recorder()
    source.subscribe(broken)
    source.subscribe(healthy)
    assert source.emit(frame(0, keyframe=True), now=0.0) == 1
    assert source.emit(frame(1, keyframe=True), now=0.02) == 1
    assert [n for n, _ in healthy.frames] == [0, 1]


def test_an_unsubscribed_or_unknown_subscriber_gets_nothing_more() -> None:
    source, gone, stranger = FrameSource(15), Recorder(), Recorder()
    source.subscribe(gone)
    source.emit(frame(0, keyframe=True), now=0.0)
    source.unsubscribe(gone)
    source.unsubscribe(stranger)  # ignored
    source.emit(frame(1), now=0.033)
    assert gone.frames == [(0, 0.0)] and stranger.frames == []


def test_closing_tells_each_subscriber_once_and_refuses_new_ones() -> None:
    source, first, second, after = FrameSource(15), Recorder(), Recorder(), Recorder()
    source.subscribe(first)
    source.subscribe(second)
    source.close()
    source.close()
    source.subscribe(after)
    source.emit(frame(0, keyframe=True), now=0.0)
    assert first.closed == [source] and second.closed == [source]
    assert after.closed == [] and after.frames == [] and len(source) == 0


@pytest.mark.parametrize(
    ("gop_frames", "keyframes", "replayed"),
    [
        (15, [0], [0, 1, 2, 3]),  # the GOP since the keyframe, for a joiner
        (15, [0, 2], [2, 3]),  # a new keyframe starts it again
        (3, [0], []),  # longer than kept: nothing until the next keyframe
        (None, [0, 1, 2, 3], []),  # audio keeps none
    ],
)
def test_the_source_keeps_its_short_gop_for_joiners(
    gop_frames: int | None, keyframes: list[int], replayed: list[int]
) -> None:
    source = FrameSource(gop_frames)
    for number in range(4):
        source.emit(frame(number, keyframe=number in keyframes), now=number / 30)
    assert [f.data[0] for f in source.gop.replay()] == replayed
