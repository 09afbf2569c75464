"""Renditions on loopback with real aiortc peers: made once per room, only while used."""

from __future__ import annotations

import asyncio

import pytest

from relay.rtc import ladder as ladder_module
from relay.rtc.ladder import Ladder
from relay.rtc.upstream import Upstream
from tests.conftest import RelayUnderTest, settled
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, SignallingError, whep_play, whip_publish

ROOM = "abr"
WIDTH, HEIGHT = 960, 540  # 16:9, above the default 640x360 rung


def camera_upstream(relay: RelayUnderTest) -> Upstream:
    room = relay.registry.find(ROOM)
    assert room is not None
    return next(u for f, u in room.upstreams.items() if f.source == "camera" and u.video)


async def frames_at(playback: Playback, size: tuple[int, int], count: int) -> list[int]:
    """Counter numbers of the last `count` frames once that many arrived at `size`."""
    log = playback.video[0]

    def enough() -> bool:
        return sum((r.width, r.height) == size for r in log.records) >= count

    sizes = {(r.width, r.height) for r in log.records}
    assert await settled(enough, timeout=20), f"wanted {count} at {size}, got sizes {sizes}"
    return [r.number for r in log.records if (r.width, r.height) == size][-count:]


@pytest.mark.timeout(90)
async def test_capped_classrooms_share_one_rendition_made_for_the_room(
    relay: RelayUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ladder_module, "LINGER", 1.0)
    token = relay.token(ROOM, "teacher")
    video = CounterVideoTrack(tag=TAG_CAMERA, width=WIDTH, height=HEIGHT)
    teacher = await whip_publish(relay.base, ROOM, token, "camera", video, ToneAudioTrack())
    classroom = relay.token(ROOM, "classroom")
    full = await whep_play(relay.base, ROOM, classroom)
    low = [await whep_play(relay.base, ROOM, classroom, quality="180p") for _ in range(2)]
    audio_only = await whep_play(relay.base, ROOM, classroom, quality="audio")
    try:
        await frames_at(full, (WIDTH, HEIGHT), 30)
        upstream = camera_upstream(relay)
        assert upstream.ladder is not None
        rendition = upstream.ladder.renditions["180p"]
        for playback in low:
            numbers = await frames_at(playback, (320, 180), 60)
            assert numbers == sorted(numbers)  # a continuous, ordered picture
        # one encoding for both classrooms: as many frames as the teacher sent, not twice
        made, sent = rendition.frames, upstream.frames
        await asyncio.sleep(2)
        made, sent = rendition.frames - made, upstream.frames - sent
        assert 0.8 * sent <= made <= 1.05 * sent
        assert upstream.ladder.renditions["360p"].frames == 0  # nobody needs it: never made
        await audio_only.audio.wait_frames(50)
        assert audio_only.video[0].records == []
        assert full.video[0].records[-1].width == WIDTH  # the uncapped keeps the source
        for playback in low:
            await playback.close()
        # the rendition stops once nobody used it for LINGER seconds
        ladder = upstream.ladder
        assert isinstance(ladder, Ladder)
        assert await settled(lambda: ladder._executor is None, timeout=10)
        stopped = rendition.frames
        await asyncio.sleep(0.5)
        assert rendition.frames == stopped
    finally:
        for playback in (full, *low, audio_only):
            await playback.close()
        await teacher.close()


async def test_an_unknown_quality_is_refused_with_the_choices(relay: RelayUnderTest) -> None:
    with pytest.raises(SignallingError) as failure:
        await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom"), quality="720p")
    assert failure.value.status == 400
    assert "unknown quality cap '720p'" in failure.value.body
    assert relay.registry.find(ROOM) is None
