"""The ladder's policy, frame by frame, with literal times: what the rendition worker does."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from relay.core.forwarder import Frame
from relay.core.keyframes import GopCache
from relay.core.renditions import (
    LINGER,
    MAX_BACKLOG,
    MAX_QUEUE,
    Drop,
    Idle,
    Job,
    LadderPolicy,
    Plan,
    Resync,
    Submit,
)

NAMES = ("360p", "180p", "still")
LOW = ("180p",)


@dataclass(frozen=True, slots=True)
class Step:
    """One teacher frame at `now`, and what happened on the event loop just before it."""

    now: float
    keyframe: bool = False
    listened: tuple[str, ...] = LOW  # renditions with a classroom subscribed right now
    back: int = 0  # worker results that came back before this frame
    failed: int = 0  # of those, results that came back as an error
    ask: tuple[str, ...] = ()  # renditions a classroom asked a keyframe of


def describe_job(job: Job) -> str:
    """ "180p+key" for an encode with a keyframe, "decode" for none; "keep" when it differs."""
    names = [n + ("+key" if n in job.keyframes else "") for n in job.encode]
    text = " ".join(names) or "decode"
    if job.keep != frozenset(job.encode):
        text += " keep " + (",".join(n for n in NAMES if n in job.keep) or "none")
    return text


def describe(plan: Plan) -> str:
    match plan:
        case Idle(stop_worker):
            return "stop" if stop_worker else "idle"
        case Drop():
            return "drop"
        case Resync(jobs=()):
            return "ask keyframe"
        case Resync(jobs):
            return "resync: " + ", ".join(describe_job(j) for j in jobs)
        case Submit(job):
            return describe_job(job)


def run(steps: list[Step], gop_frames: int = 15, policy: LadderPolicy | None = None) -> list[str]:
    """Feed the steps to a policy as the shell does; the GOP sees each frame before the plan."""
    policy = policy or LadderPolicy(NAMES)
    gop = GopCache(gop_frames)
    out = []
    for step in steps:
        for index in range(step.back):
            policy.delivered(ok=index >= step.failed)
        for name in step.ask:
            policy.request_keyframe(name)
        frame = Frame("teacher", b"", round(step.now * 90_000), step.keyframe)
        gop.add(frame)
        out.append(describe(policy.plan(frame, step.listened, gop, step.now)))
    return out


def test_the_constants_are_the_documented_ones() -> None:
    assert (LINGER, MAX_BACKLOG, MAX_QUEUE) == (10.0, 4, 30)


def test_starting_with_no_rendition_listened_to_costs_nothing() -> None:
    policy = LadderPolicy(NAMES)
    steps = [Step(0.0, keyframe=True, listened=()), Step(0.033, listened=())]
    assert run(steps, policy=policy) == ["idle", "idle"]
    assert policy.queued == 0


@pytest.mark.parametrize(
    ("steps", "plans"),
    [
        (
            [
                Step(0.0, keyframe=True),
                Step(5.0, back=1),  # the last classroom leaves after this frame
                Step(10.0, listened=(), back=1),
                Step(15.0, listened=(), back=1),  # exactly LINGER later: still encoding
                Step(15.033, listened=(), back=1),
                Step(15.066, listened=()),
            ],
            ["180p+key", "180p", "180p", "180p", "stop", "idle"],
        ),
        # a classroom back within LINGER keeps the same encoder: no new keyframe
        (
            [Step(0.0, keyframe=True), Step(4.0, listened=(), back=1), Step(9.0, back=1)],
            ["180p+key", "180p", "180p"],
        ),
        # 360p lingers out while 180p keeps the worker: only its encoder is retired
        (
            [
                Step(0.0, keyframe=True, listened=("360p", "180p")),
                Step(10.0, back=1),
                Step(10.033, back=1),
            ],
            ["360p+key 180p+key", "360p 180p", "180p"],
        ),
        # once stopped, a new listener starts from the next keyframe and a new encoder
        (
            [
                Step(0.0, keyframe=True, listened=()),
                Step(1.0, keyframe=True),
                Step(11.1, keyframe=True, listened=(), back=1),
                Step(20.0, keyframe=True),
            ],
            ["idle", "180p+key", "stop", "180p"],
        ),
    ],
)
def test_an_encoder_lingers_ten_seconds_after_its_last_listener_then_stops(
    steps: list[Step], plans: list[str]
) -> None:
    assert run(steps) == plans


def test_over_max_backlog_frames_are_decoded_not_encoded() -> None:
    steps = [Step(0.0, keyframe=True)] + [Step(i / 30) for i in range(1, 6)]
    steps.append(Step(0.2, back=2))  # 6 waited, 4 still wait: still behind
    steps.append(Step(0.233, back=2))  # 3 wait: encoding again
    expected = ["180p+key", "180p", "180p", "180p", "decode keep 180p", "decode keep 180p"]
    assert run(steps) == [*expected, "decode keep 180p", "180p"]


def test_over_max_queue_frames_are_dropped_and_the_next_non_keyframe_resyncs() -> None:
    steps = [Step(0.0, keyframe=True)] + [Step(i / 30) for i in range(1, MAX_QUEUE)]
    steps += [
        Step(1.0),  # MAX_QUEUE frames wait: dropped
        Step(1.033, back=MAX_QUEUE),  # the GOP outgrew its cache: the teacher is asked
        Step(1.066),
        Step(1.1, keyframe=True),
    ]
    plans = run(steps)
    assert plans[:5] == ["180p+key", "180p", "180p", "180p", "decode keep 180p"]
    assert plans[MAX_QUEUE:] == ["drop", "ask keyframe", "ask keyframe", "180p"]


@pytest.mark.parametrize(
    ("gop_frames", "plans"),
    [
        # mid-GOP: decode the cached frames (retiring encoders), encode the current one
        (15, ["idle", "idle", "idle", "resync: decode, decode, decode, 180p+key", "180p"]),
        # nothing cached: the decoder waits for the teacher's keyframe
        (0, ["idle", "idle", "idle", "ask keyframe", "ask keyframe"]),
    ],
)
def test_a_listener_arriving_mid_gop_resyncs_from_the_cached_gop(
    gop_frames: int, plans: list[str]
) -> None:
    steps = [Step(0.0, keyframe=True, listened=()), Step(0.033, listened=())]
    steps += [Step(0.066, listened=()), Step(0.1), Step(0.133, back=4)]
    assert run(steps, gop_frames) == plans


def test_a_long_cached_gop_is_decoded_but_its_last_frame_waits_for_the_backlog() -> None:
    steps = [Step(0.0, keyframe=True, listened=())]
    steps += [Step(i / 30, listened=()) for i in range(1, 5)] + [Step(0.166)]
    # MAX_BACKLOG frames of the replay wait already when its last one is planned
    resync = "resync: " + ", ".join(["decode"] * 5 + ["decode keep 180p"])
    assert run(steps)[5] == resync


@pytest.mark.parametrize(
    ("steps", "plans"),
    [
        # asked once, made once, on the next encoded frame
        (
            [Step(0.0, keyframe=True), Step(0.033, back=1, ask=LOW), Step(0.066, back=1)],
            ["180p+key", "180p+key", "180p"],
        ),
        # asked twice before one frame: still one keyframe
        (
            [Step(0.0, keyframe=True), Step(0.033, back=1, ask=LOW * 2), Step(0.066, back=1)],
            ["180p+key", "180p+key", "180p"],
        ),
        # asked while the backlog skips encoding: kept until a frame is encoded
        (
            [Step(0.0, keyframe=True)]
            + [Step(i / 30) for i in range(1, 4)]
            + [Step(0.133, ask=LOW), Step(0.166, back=2), Step(0.2, back=1)],
            ["180p+key", "180p", "180p", "180p", "decode keep 180p", "180p+key", "180p"],
        ),
        # another rendition's request does not touch this one
        (
            [Step(0.0, keyframe=True), Step(0.033, back=1, ask=("360p",))],
            ["180p+key", "180p"],
        ),
    ],
)
def test_a_renditions_keyframe_request_is_honoured_once_on_the_next_encoded_frame(
    steps: list[Step], plans: list[str]
) -> None:
    assert run(steps) == plans


@pytest.mark.parametrize(
    ("gop_frames", "after_error"),
    [
        (15, "resync: decode, decode, 180p"),
        (0, "ask keyframe"),
    ],
)
def test_a_worker_error_resyncs_the_decoder(gop_frames: int, after_error: str) -> None:
    steps = [Step(0.0, keyframe=True), Step(0.033, back=1), Step(0.066, back=1, failed=1)]
    assert run(steps, gop_frames)[2] == after_error


def test_a_result_is_fanned_out_unless_it_failed_or_the_ladder_closed() -> None:
    policy = LadderPolicy(NAMES)
    run([Step(0.0, keyframe=True), Step(0.033), Step(0.066)], policy=policy)
    assert [policy.delivered(ok=True), policy.delivered(ok=False)] == [True, False]
    policy.close()
    assert policy.delivered(ok=True) is False
    assert policy.queued == 0
    # closed: nothing more is planned, and the shell has stopped the worker already
    assert run([Step(1.0, keyframe=True)], policy=policy) == ["idle"]
