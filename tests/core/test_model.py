import pytest

from relay.core.errors import BadRequest, Conflict, NotFound
from relay.core.model import (
    ClassroomJoined,
    Event,
    FeedAssigned,
    FeedKey,
    LessonEnded,
    LessonStarted,
    Room,
    SlotKey,
    SourceEnded,
    SourceStarted,
    classroom_slots,
)

AV = frozenset({"audio", "video"})
V = frozenset({"video"})
CAM_V, CAM_A, SCR_V = (
    FeedKey("camera", "video"),
    FeedKey("camera", "audio"),
    FeedKey("screen", "video"),
)


def assigned(events: list[Event]) -> dict[SlotKey, FeedKey | None]:
    return {e.slot: e.feed for e in events if isinstance(e, FeedAssigned)}


def test_classroom_joining_before_teacher_gets_no_feed() -> None:
    room = Room("r")
    events = room.join("c1", "School 1", ("audio", "video"))
    assert events == [ClassroomJoined("r", "c1", "School 1")]


def test_first_publish_starts_lesson_and_feeds_waiting_classrooms() -> None:
    room = Room("r")
    room.join("c1", "School 1", ("audio", "video"))
    events = room.publish("p1", "camera", "Ms Li", AV)
    assert events[:2] == [
        LessonStarted("r"),
        SourceStarted("r", "camera", "p1", "Ms Li", ("audio", "video")),
    ]
    assert assigned(events) == {SlotKey("c1", "audio"): CAM_A, SlotKey("c1", "video", 0): CAM_V}


@pytest.mark.parametrize(
    ("video_slots", "live", "expected"),
    [
        (1, ["camera"], [CAM_V]),
        (1, ["camera", "screen"], [SCR_V]),
        (1, ["screen"], [SCR_V]),
        (2, ["camera"], [CAM_V, None]),
        (2, ["camera", "screen"], [CAM_V, SCR_V]),
        (2, ["screen"], [None, SCR_V]),
    ],
)
def test_video_slots_follow_screen_first_rule(
    video_slots: int, live: list[str], expected: list[FeedKey | None]
) -> None:
    room = Room("r")
    room.join("c", "School", ("video",) * video_slots)
    for i, source in enumerate(live):
        room.publish(f"p{i}", source, "T", AV if source == "camera" else V)
    assert [room.assignments.get(SlotKey("c", "video", i)) for i in range(video_slots)] == expected


def test_screen_share_end_returns_single_slot_to_camera() -> None:
    room = Room("r")
    room.join("c", "School", ("audio", "video"))
    room.publish("cam", "camera", "T", AV)
    room.publish("scr", "screen", "T", V)
    events = room.unpublish("scr")
    assert events[0] == SourceEnded("r", "screen", "scr")
    assert assigned(events) == {SlotKey("c", "video", 0): CAM_V}
    assert room.live


def test_last_unpublish_ends_lesson_and_unassigns() -> None:
    room = Room("r")
    room.join("c", "School", ("audio", "video"))
    room.publish("cam", "camera", "T", AV)
    events = room.unpublish("cam")
    assert events[-1] == LessonEnded("r")
    assert assigned(events) == {SlotKey("c", "audio"): None, SlotKey("c", "video", 0): None}
    assert room.assignments == {}


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (lambda r: r.publish("p2", "camera", "T", AV), Conflict),
        (lambda r: r.publish("p2", "board", "T", AV), BadRequest),
        (lambda r: r.publish("p2", "screen", "T", frozenset()), BadRequest),
        (lambda r: r.unpublish("nope"), NotFound),
        (lambda r: r.leave("nope"), NotFound),
        (lambda r: r.join("c9", "S", ("audio", "video", "video", "video")), BadRequest),
        (lambda r: r.join("c9", "S", ("audio", "video", "audio")), BadRequest),
        (lambda r: r.join("c9", "S", ("video", "application")), BadRequest),
        (lambda r: r.join("c9", "S", ()), BadRequest),
    ],
)
def test_invalid_actions_raise_and_change_nothing(action, error) -> None:  # type: ignore[no-untyped-def]
    room = Room("r")
    room.publish("p1", "camera", "T", AV)
    room.join("c1", "S", ("audio", "video"))
    before = (dict(room.publishers), dict(room.classrooms), dict(room.assignments))
    with pytest.raises(error):
        action(room)
    assert (room.publishers, room.classrooms, room.assignments) == before


def test_leave_forgets_assignments() -> None:
    room = Room("r")
    room.publish("p1", "camera", "T", AV)
    room.join("c1", "S", ("audio", "video", "video"))
    room.leave("c1")
    assert room.assignments == {}
    assert room.classrooms == {}


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("audio", "video"), [("audio", 0), ("video", 0)]),
        (("video", "audio"), [("video", 0), ("audio", 0)]),
        (("video",), [("video", 0)]),
        (("audio",), [("audio", 0)]),
        (("video", "video", "audio"), [("video", 0), ("video", 1), ("audio", 0)]),
        (("audio", "video", "video"), [("audio", 0), ("video", 0), ("video", 1)]),
        (("video", "audio", "video"), [("video", 0), ("audio", 0), ("video", 1)]),
    ],
)
def test_slots_follow_m_line_order_and_video_index_counts_video_m_lines_only(
    kinds: tuple[str, ...], expected: list[tuple[str, int]]
) -> None:
    assert classroom_slots("c", kinds) == tuple(SlotKey("c", k, i) for k, i in expected)


@pytest.mark.parametrize(
    "kinds",
    [("video", "audio", "video"), ("audio", "video", "video"), ("video", "video", "audio")],
)
def test_first_video_m_line_carries_camera_and_second_the_screen_wherever_audio_sits(
    kinds: tuple[str, ...],
) -> None:
    room = Room("r")
    room.publish("cam", "camera", "T", AV)
    room.publish("scr", "screen", "T", V)
    room.join("c", "School", kinds)
    assert room.assignments == {
        SlotKey("c", "audio"): CAM_A,
        SlotKey("c", "video", 0): CAM_V,
        SlotKey("c", "video", 1): SCR_V,
    }
