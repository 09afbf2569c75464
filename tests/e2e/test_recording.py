"""Lessons given over loopback end up in the library as files that decode and seek, through
teacher reconnects and a relay killed mid-lesson."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from relay.cli import main
from relay.tokens import issue
from tests.conftest import RelayUnderTest, free_port, settled
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack, read_counter
from tests.peers import whep_play, whip_publish

ROOM = "recorded"
ROOT = Path(__file__).resolve().parents[2]
GRACE = 1.5
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def relay_env() -> dict[str, str]:
    return {"KETANG_RECONNECT_GRACE": str(GRACE)}


async def teach(base: str, token: str, seconds: float, start: int = 0) -> CounterVideoTrack:
    """Publish a numbered camera and a tone for `seconds`, with a keyframe every second (as a
    browser makes on the relay's requests), then end the publication."""
    video = CounterVideoTrack(tag=TAG_CAMERA, start=start)
    publication = await whip_publish(base, ROOM, token, "camera", video, ToneAudioTrack())
    sender = next(t.sender for t in publication.pc.getTransceivers() if t.kind == "video")
    for _ in range(round(seconds)):
        await asyncio.sleep(1.0)
        sender._send_keyframe()  # what a PLI does in aiortc's sender
    await publication.close()
    return video


def decoded(path: Path) -> tuple[list[int], list[float], int, float]:
    """Counter numbers and times of every video frame, audio frames, and the duration."""
    numbers, times, audio = [], [], 0
    with av.open(str(path)) as container:
        duration = (container.duration or 0) / av.time_base
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                reading = read_counter(frame)
                assert reading is not None, "a recorded frame decodes into a broken picture"
                numbers.append(reading[1])
                times.append(float(frame.time or 0))
            else:
                audio += 1
    return numbers, times, audio, duration


def seeks_to(path: Path, target: float) -> float:
    """Seek to `target` s; the time of the first frame decoded there (the keyframe before)."""
    with av.open(str(path)) as container:
        container.seek(int(target * av.time_base), stream=None)
        frame = next(container.decode(video=0))
        return float(frame.time or 0)


async def published(
    relay: RelayUnderTest, count: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    catalog = relay.catalog
    for _ in range(int(timeout * 10)):
        if len(catalog.lessons) >= count:
            return list(catalog.lessons.values())
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(catalog.lessons)} lessons published, expected {count}")


@pytest.mark.timeout(60)
async def test_a_lesson_is_published_as_files_that_decode_and_seek(relay: RelayUnderTest) -> None:
    hub_token = relay.token(ROOM, "teacher", "Ms Wang")
    video = await teach(relay.base, hub_token, 4)
    (meta,) = await published(relay)
    assert meta["room"] == ROOM and meta["teacher"] == "Ms Wang" and meta["sources"] == ["camera"]
    path = relay.catalog.store.path(meta["id"], "camera.webm")
    numbers, _times, audio, duration = decoded(path)
    # every frame the teacher sent is there once, in order: nothing lost, nothing re-encoded
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    assert numbers[0] <= 3 and numbers[-1] >= video.next_number - 5
    assert abs(duration - len(numbers) / 30) < 0.3
    assert meta["files"]["camera"]["video_frames"] == len(numbers)
    assert audio >= 0.9 * duration / 0.02
    assert 1.0 <= seeks_to(path, 2.5) <= 2.5
    assert (path.parent / "poster.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert not list((relay.config.storage.data_dir / "recordings").iterdir())
    # the room lived through its reconnect grace, and no longer than that
    assert relay.registry.find(ROOM) is None


@pytest.mark.timeout(60)
async def test_a_teacher_reconnect_continues_the_same_lesson(relay: RelayUnderTest) -> None:
    token = relay.token(ROOM, "teacher", "Ms Wang")
    first = await teach(relay.base, token, 3)
    await asyncio.sleep(0.5)  # within the grace: the teacher's browser publishes again
    second = await teach(relay.base, token, 3, start=first.next_number)
    (meta,) = await published(relay)
    numbers, times, _, duration = decoded(relay.catalog.store.path(meta["id"], "camera.webm"))
    assert numbers == sorted(numbers) and numbers[-1] >= second.next_number - 5
    assert numbers[0] <= 3
    # both publications in one file, the gap between them kept as time, not squeezed out
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert 0.4 < gap < 2.0
    assert duration == pytest.approx(times[-1], abs=0.1)


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[tuple[str, bytes, Path]]:
    """A relay in its own process, so it can be killed; restartable on the same data."""
    port, secret, data = free_port(), "kill-test-secret-" + "x" * 32, tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    env["KETANG_SECRET"] = secret
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--data-dir", str(data)]
    command += ["--udp-port", "0"]
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        processes.append(process)
        return process

    yield f"http://127.0.0.1:{port}", secret.encode(), data, start  # type: ignore[misc]
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


async def wait_healthy(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/healthz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("relay did not come up")


async def library(base: str, token: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/api/library", headers=headers) as reply:
            lessons: list[dict[str, Any]] = (await reply.json())["lessons"]
            return lessons


@pytest.mark.timeout(90)
async def test_a_relay_killed_mid_lesson_recovers_all_but_the_last_seconds(
    relay_process: Any,
) -> None:
    base, secret, data, start = relay_process
    relay = start()
    await wait_healthy(base)
    token = issue(secret, ROOM, "teacher", "Ms Wang", 600)
    video = CounterVideoTrack(tag=TAG_CAMERA)
    publication = await whip_publish(base, ROOM, token, "camera", video, ToneAudioTrack())
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.sleep(6.0)
    relay.send_signal(signal.SIGKILL)
    killed_after = loop.time() - began
    relay.wait(timeout=10)
    await publication.pc.close()
    recordings = list((data / "recordings").iterdir())
    assert len(recordings) == 1  # what the killed relay left behind

    start()  # the new relay publishes what it finds at start
    await wait_healthy(base)
    reader = issue(secret, "any-room", "classroom", "school", 600)
    for _ in range(300):
        lessons = await library(base, reader)
        if lessons:
            break
        await asyncio.sleep(0.1)
    (meta,) = lessons
    numbers, _, _, duration = decoded(data / "library" / meta["id"] / "camera.webm")
    ARTIFACTS.mkdir(exist_ok=True)
    figures = {"killed_after_s": round(killed_after, 2), "recovered_s": round(duration, 2)}
    (ARTIFACTS / "kill-recovery.json").write_text(json.dumps(figures))
    assert duration >= killed_after - 2.0, figures
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    assert json.loads((data / "library" / meta["id"] / "meta.json").read_text())["id"] == meta["id"]
    assert not (data / "recordings" / recordings[0].name).exists()


@pytest.mark.timeout(60)
async def test_each_classrooms_quality_is_kept_with_the_lesson_for_reports(
    relay: RelayUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    classroom = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "Hope Primary"))
    loop = asyncio.get_running_loop()

    def estimate_known() -> bool:
        room = relay.registry.find(ROOM)
        snapshot = None if room is None else room.snapshot(loop.time())
        return snapshot is not None and any(c.estimate > 0 for c in snapshot.classrooms)

    async def sample_while_teaching() -> None:
        # the classroom's first REMB may take a couple of seconds on a busy machine
        await settled(estimate_known, timeout=3.0)
        for _ in range(4):
            await asyncio.sleep(0.6)
            relay.registry.sample_quality(loop.time())  # what the relay does every 5 s

    try:
        sampling = asyncio.ensure_future(sample_while_teaching())
        await teach(relay.base, relay.token(ROOM, "teacher"), 6)
        await sampling
        (meta,) = await published(relay)
    finally:
        await classroom.close()
    (entry,) = meta["quality"]
    assert entry["classroom"] == "Hope Primary" and entry["attended_minutes"] > 0
    assert entry["bandwidth_p50"] > 0 and entry["renditions"] == {
        "source": entry["attended_minutes"]
    }
    data = relay.config.storage.data_dir
    stored = json.loads((data / "quality" / f"{meta['id']}.json").read_text())
    assert stored["classrooms"] == meta["quality"]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert main(["report", "--from", day, "--to", day, "--data-dir", str(data)]) == 0
    assert "Hope Primary" in capsys.readouterr().out
