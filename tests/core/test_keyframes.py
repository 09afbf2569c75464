import pytest

from relay.core.keyframes import KeyframeCoalescer


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0.0], [True]),
        ([0.0, 0.1, 0.2, 0.49], [True, False, False, False]),
        ([0.0, 0.5, 0.9, 1.0], [True, True, False, True]),
        ([10.0, 10.0, 10.0], [True, False, False]),
    ],
)
def test_requests_pass_at_most_once_per_interval(times: list[float], expected: list[bool]) -> None:
    coalescer = KeyframeCoalescer(min_interval=0.5)
    assert [coalescer.request(t) for t in times] == expected


def test_hundred_joins_at_once_send_two_requests_per_second() -> None:
    coalescer = KeyframeCoalescer(min_interval=0.5)
    # 100 classrooms, each re-asking every 33 ms (once per gated frame) for one second
    sent = sum(
        coalescer.request(frame / 30 + joiner * 1e-4)
        for frame in range(30)
        for joiner in range(100)
    )
    assert sent == 2
    assert coalescer.absorbed == 2998


def test_answered_tracks_keyframes_after_the_last_request() -> None:
    coalescer = KeyframeCoalescer(min_interval=0.5)
    assert coalescer.answered()
    coalescer.request(1.0)
    assert not coalescer.answered()
    coalescer.keyframe_seen(1.2)
    assert coalescer.answered()
