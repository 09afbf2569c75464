from collections.abc import Hashable

import pytest

from relay.core.forwarder import Forwarder, Frame, Timeline, Verdict

Q, NT, AK, OV = Verdict.QUEUED, Verdict.NOT_TARGET, Verdict.AWAIT_KEYFRAME, Verdict.OVERFLOW


def video(origin: Hashable, ts: int, key: bool = False) -> Frame:
    return Frame(origin, b"k" if key else b"d", ts, key)


def run(fwd: Forwarder, frames: list[Frame]) -> list[Verdict]:
    return [fwd.push(f, now=f.timestamp / 90_000) for f in frames]


@pytest.mark.parametrize(
    ("frames", "verdicts"),
    [
        # a joining classroom waits for the first keyframe of its target
        ([video("cam", 0), video("cam", 3000), video("cam", 6000, True)], [AK, AK, Q]),
        ([video("cam", 0, True), video("cam", 3000)], [Q, Q]),
        # frames of other origins never pass
        ([video("scr", 0, True)], [NT]),
    ],
)
def test_join_waits_for_keyframe_of_target(frames: list[Frame], verdicts: list[Verdict]) -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=10)
    fwd.retarget("cam")
    assert fwd.wants_keyframe
    assert run(fwd, frames) == verdicts


def test_switch_keeps_old_origin_until_keyframe_of_new_one() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=10)
    fwd.retarget("cam")
    run(fwd, [video("cam", 0, True)])
    fwd.retarget("scr")
    verdicts = run(fwd, [video("cam", 3000), video("scr", 3000), video("scr", 6000, True)])
    assert verdicts == [Q, AK, Q]
    assert fwd.current == "scr"
    assert not fwd.wants_keyframe
    # once switched, the old origin is cut off
    assert run(fwd, [video("cam", 9000, True)]) == [NT]


def test_switch_drops_queued_frames_of_old_origin() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=10)
    fwd.retarget("cam")
    run(fwd, [video("cam", 0, True), video("cam", 3000)])
    fwd.retarget("scr")
    run(fwd, [video("scr", 6000, True)])
    assert len(fwd) == 1
    out = fwd.pop()
    assert out is not None and out.data == b"k"


def test_overflow_drops_backlog_and_waits_for_next_keyframe() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=3)
    fwd.retarget("cam")
    verdicts = run(
        fwd,
        [video("cam", 0, True), *(video("cam", t) for t in range(1, 5)), video("cam", 5, True)],
    )
    assert verdicts == [Q, Q, Q, OV, AK, Q]
    assert len(fwd) == 1
    assert not fwd.wants_keyframe


def test_audio_overflow_drops_backlog_without_gating() -> None:
    fwd = Forwarder(video=False, clock_rate=48_000, limit=2)
    fwd.retarget("mic")
    frames = [Frame("mic", b"a", ts * 960, True) for ts in range(4)]
    assert [fwd.push(f, now=0.0) for f in frames] == [Q, Q, OV, Q]
    assert not fwd.wants_keyframe


def test_keyframe_skips_large_backlog() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=9)
    fwd.retarget("cam")
    run(fwd, [video("cam", 0, True), video("cam", 1), video("cam", 2)])
    run(fwd, [video("cam", 3, True)])
    out = fwd.pop()
    assert out is not None and out.data == b"k"
    assert len(fwd) == 0


def test_retarget_none_stops_and_clears() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=9)
    fwd.retarget("cam")
    run(fwd, [video("cam", 0, True)])
    fwd.retarget(None)
    assert len(fwd) == 0
    assert run(fwd, [video("cam", 3000, True)]) == [NT]


def test_teacher_reconnect_resumes_at_new_generation_keyframe() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=9)
    fwd.retarget(("cam", 1))
    run(fwd, [video(("cam", 1), 0, True)])
    fwd.retarget(("cam", 2))
    assert run(fwd, [video(("cam", 2), 0), video(("cam", 2), 3000, True)]) == [AK, Q]
    assert fwd.current == ("cam", 2)


@pytest.mark.parametrize(
    ("pushes", "expected"),
    [
        # (origin, timestamp, now) -> outgoing timestamp
        ([("a", 500, 0.0), ("a", 3500, 0.033)], [0, 3000]),
        # a new origin restarts at 0; the output continues by wall-clock time (2 s = 180000)
        ([("a", 0, 0.0), ("a", 3000, 0.033), ("b", 0, 2.033)], [0, 3000, 183000]),
        # same wall-clock instant: still strictly increasing
        ([("a", 0, 1.0), ("b", 0, 1.0)], [0, 1]),
    ],
)
def test_timeline_stays_continuous_across_origins(
    pushes: list[tuple[str, int, float]], expected: list[int]
) -> None:
    timeline = Timeline(90_000)
    assert [timeline.map(o, ts, now) for o, ts, now in pushes] == expected


def test_forgetting_the_current_origin_keeps_the_pending_switch() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=9)
    fwd.retarget("scr")
    run(fwd, [video("scr", 0, True)])
    fwd.retarget("cam")
    fwd.forget("scr")
    assert fwd.current is None and fwd.target == "cam"
    assert run(fwd, [video("cam", 3000), video("cam", 6000, True)]) == [AK, Q]


def test_forgetting_the_target_keeps_the_current_origin() -> None:
    fwd = Forwarder(video=True, clock_rate=90_000, limit=9)
    fwd.retarget("cam")
    run(fwd, [video("cam", 0, True)])
    fwd.retarget("scr")
    fwd.forget("scr")
    assert fwd.current == "cam" and fwd.target is None
    assert run(fwd, [video("cam", 3000)]) == [Q]
