import pytest

from relay.core.forwarder import Frame
from relay.core.keyframes import GopCache, KeyframeCoalescer


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


def frame(ts: int, key: bool = False) -> Frame:
    return Frame("cam", b"k" if key else b"d", ts, key)


@pytest.mark.parametrize(
    ("frames", "replayed"),
    [
        ([], []),
        ([frame(0), frame(1)], []),  # no keyframe seen yet
        ([frame(0, True), frame(1), frame(2)], [0, 1, 2]),
        ([frame(0, True), frame(1), frame(2, True), frame(3)], [2, 3]),
        # past max_frames the GOP is too long to burst into a link: nothing until the next key
        ([frame(0, True), frame(1), frame(2), frame(3)], []),
        ([frame(0, True), frame(1), frame(2), frame(3), frame(4, True)], [4]),
    ],
)
def test_gop_cache_replays_only_short_gops_from_their_keyframe(
    frames: list[Frame], replayed: list[int]
) -> None:
    cache = GopCache(max_frames=3)
    for f in frames:
        cache.add(f)
    assert [f.timestamp for f in cache.replay()] == replayed
