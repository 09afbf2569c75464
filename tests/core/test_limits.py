import pytest

from relay.core.limits import SETUP, SILENT, Bucket, Liveness, expired


@pytest.mark.parametrize(
    ("now", "life", "verdict"),
    [
        (14.9, Liveness(0.0, False, None), None),
        (15.0, Liveness(0.0, False, None), SETUP),
        (15.0, Liveness(0.0, False, 14.0), SETUP),  # packets, but ICE/DTLS never completed
        (30.0, Liveness(0.0, True, 22.5), None),
        (30.5, Liveness(0.0, True, 22.5), SILENT),
        (7.9, Liveness(0.0, True, None), None),  # connected, nothing noted yet: from creation
        (8.0, Liveness(0.0, True, None), SILENT),
    ],
)
def test_a_session_expires_when_setup_is_late_or_its_peer_went_silent(
    now: float, life: Liveness, verdict: str | None
) -> None:
    assert expired(now, life, setup_seconds=15.0, silence_seconds=8.0) == verdict


@pytest.mark.parametrize(
    ("times", "taken"),
    [
        ([0.0] * 5, [True, True, True, False, False]),  # a burst of 3
        ([0.0, 0.0, 0.0, 0.5, 1.0, 1.0], [True, True, True, True, True, False]),  # 2 a second
        ([0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 10.0], [True] * 6 + [False]),  # refills to the burst
    ],
)
def test_a_bucket_allows_its_rate_and_its_burst(times: list[float], taken: list[bool]) -> None:
    bucket = Bucket(rate=2.0, burst=3.0)
    assert [bucket.take(t) for t in times] == taken
