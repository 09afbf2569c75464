"""One room's flood never slows another room's media: 300 pages watching room A while its
teacher's token floods it with messages, and a classroom of room B measured meanwhile."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from monitoring.metrics import REGISTRY
from tests.conftest import RelayUnderTest
from tests.e2e.processes import ROOT, gaps, start_classroom
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import whip_publish

PAGES = 300
FLOOD_SECONDS = 8.0


@pytest.fixture
def relay_env() -> dict[str, str]:
    return {"KETANG_RECORD": "false"}


@pytest.mark.timeout(120)
async def test_a_flooded_room_leaves_another_rooms_classroom_at_full_rate(
    relay: RelayUnderTest,
) -> None:
    teacher = await whip_publish(
        relay.base, "b", relay.token("b", "teacher"), "camera", CounterVideoTrack(),
        ToneAudioTrack(),
    )  # fmt: skip
    classroom = await start_classroom(f"{relay.base}/whep/b", relay.token("b", "classroom", "B"))
    reader = asyncio.ensure_future(classroom.read())

    def limited(limit: str) -> float:
        return REGISTRY.get_sample_value("ketang_limited_requests_total", {"limit": limit}) or 0.0

    refused, closed = limited("page_messages"), limited("page_socket_closed")
    job = {
        "base": relay.base,
        "room": "a",
        "pages": [relay.token("a", "classroom", f"school {n}") for n in range(PAGES)],
        "teacher": relay.token("a", "teacher", "flooder"),
        "seconds": FLOOD_SECONDS,
    }
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.flood_process", cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert flooder.stdin is not None and flooder.stdout is not None
    try:
        await asyncio.wait_for(classroom.ready.wait(), 10)
        flooder.stdin.write(json.dumps(job).encode() + b"\n")
        await flooder.stdin.drain()
        assert json.loads(await asyncio.wait_for(flooder.stdout.readline(), 30)) == {
            "event": "ready"
        }
        loop = asyncio.get_running_loop()
        started, lag = loop.time(), 0.0
        while loop.time() < started + FLOOD_SECONDS:
            await asyncio.sleep(0.5)
            lag = max(lag, REGISTRY.get_sample_value("ketang_event_loop_lag_seconds") or 0.0)
        ended = loop.time()
        result = json.loads(await asyncio.wait_for(flooder.stdout.readline(), 30))
    finally:
        if flooder.returncode is None:
            flooder.kill()
        await flooder.wait()
        await classroom.stop()
        reader.cancel()
        await teacher.close()
    video = [t for t, _, _ in classroom.video if started + 1 <= t <= ended]
    fps = len(video) / (ended - started - 1)
    worst = max(gaps(video, started + 1, ended))
    print(f"flood: {result}, room B: {fps:.1f} fps, worst gap {worst:.3f} s, loop lag {lag:.3f} s")
    assert result["sent"] > 1000  # the flood was real, and was refused, socket after socket
    assert limited("page_messages") - refused > 1000
    assert limited("page_socket_closed") - closed >= 100  # each flooding socket cut after 51
    assert fps >= 25 and worst < 0.3
    assert lag < 0.2  # before: stalls of 0.45 s; one event-loop lap of other work is fine
