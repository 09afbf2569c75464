"""One lesson across several real `ketang serve` processes and a real redis-server: the
teacher's node is the origin, the others pull the lesson once and fan it out (an edge)."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import aiohttp
import pytest

from tests.cluster.nodes import Node, token
from tests.conftest import settled
from tests.media import TAG_CAMERA, TAG_SCREEN, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, Publication, delete_session, max_gap, whep_play, whip_publish

ROOM = "county-music"
PLAY_TIMEOUT = 20.0  # a pull starts within a directory round (2 s) plus ICE and DTLS


async def teach(node: Node) -> Publication:
    video = CounterVideoTrack(tag=TAG_CAMERA, fps=30)
    teacher = token(ROOM, "teacher", "Ms Zhao")
    return await whip_publish(node.base, ROOM, teacher, "camera", video, ToneAudioTrack())


async def join(node: Node, school: str) -> Playback:
    return await whep_play(node.base, ROOM, token(ROOM, "classroom", school))


SCHOOLS = ("Hill School", "Lake School", "River School", "Field School")


async def classrooms_seen_from(node: Node) -> list[str]:
    """The room's classrooms as that node's admin API lists them, once it heard the others
    (nodes tell each other their rooms every round, HEARTBEAT_SECONDS)."""
    admin = token("*", "admin", "bureau")
    names: list[str] = []
    for _ in range(50):
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{node.base}/api/rooms", headers={"Authorization": f"Bearer {admin}"}
            ) as reply,
        ):
            rooms = (await reply.json())["rooms"]
        names = [c["name"] for r in rooms if r["room"] == ROOM for c in r["classrooms"]]
        if len(names) == len(SCHOOLS):
            break
        await asyncio.sleep(0.2)
    return names


def fps(classroom: Playback, seconds: float = 2.0) -> float:
    now = asyncio.get_running_loop().time()
    return classroom.video[0].fps(now, seconds, TAG_CAMERA)


def gap_across(classroom: Playback, moment: float) -> float:
    """The longest video gap from the last frame before `moment` on."""
    times = [r.t for r in classroom.video[0].records]
    last_before = max(t for t in times if t < moment)
    return max_gap(times, since=last_before)


@pytest.mark.timeout(120)
async def test_a_lesson_on_node_a_plays_on_b_and_c_and_follows_the_teacher_to_b(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    publication = await teach(a)
    classrooms = [
        await join(node, school) for node, school in zip((b, b, c, c), SCHOOLS, strict=True)
    ]
    try:
        await asyncio.gather(
            *(p.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT) for p in classrooms)
        )
        assert min(fps(p) for p in classrooms) >= 25
        assert all(p.audio.count > 0 for p in classrooms)
        # each edge pulls once for its two classrooms: the origin lists none of its own
        assert a.health()["classrooms"] == 0
        assert b.health()["classrooms"] == 2 and c.health()["classrooms"] == 2
        # every node's admin API shows the whole lesson's four classrooms
        for node in (a, b, c):
            assert sorted(await classrooms_seen_from(node)) == sorted(SCHOOLS)
        # the teacher's browser reconnects through B: B becomes the origin, C pulls from B
        moved_at = asyncio.get_running_loop().time()
        await publication.close()
        publication = await teach(b)
        await asyncio.gather(
            *(p.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT) for p in classrooms)
        )
        assert min(fps(p) for p in classrooms) >= 25
        gaps = [gap_across(p, moved_at) for p in classrooms]
        print(f"\nteacher moved A -> B: classrooms' longest video gap {max(gaps):.2f} s")
        assert b.health()["classrooms"] == 2  # C's pull is not a classroom
        # a classroom's DELETE may reach any node: C forwards it to B, which holds it
        leaving = classrooms.pop(0)
        path = leaving.location.removeprefix(b.base)
        assert await delete_session(c.base + path, leaving.token) == 200
        assert b.health()["classrooms"] == 1
        await leaving.close()
    finally:
        await asyncio.gather(*(p.close() for p in classrooms))
        await publication.close()


@pytest.mark.timeout(120)
async def test_an_edge_carries_the_screen_share_as_the_origin_does(nodes: list[Node]) -> None:
    """A two-slot classroom on an edge gets camera and screen; a one-slot classroom gets the
    screen while it is shared and the camera before and after, as on the origin."""
    a, b, _ = nodes
    camera = await teach(a)
    two_slots = await whep_play(b.base, ROOM, token(ROOM, "classroom", "Hill"), video_slots=2)
    one_slot = await join(b, "River")
    screen: Publication | None = None
    try:
        await one_slot.wait_frames(0, 30, TAG_CAMERA, timeout=PLAY_TIMEOUT)
        teacher = token(ROOM, "teacher", "Ms Zhao")
        slides = CounterVideoTrack(tag=TAG_SCREEN, fps=30)
        screen = await whip_publish(a.base, ROOM, teacher, "screen", slides, None)
        await asyncio.gather(
            two_slots.wait_frames(0, 30, TAG_CAMERA, timeout=PLAY_TIMEOUT),
            two_slots.wait_frames(1, 30, TAG_SCREEN, timeout=PLAY_TIMEOUT),
            one_slot.wait_frames(0, 30, TAG_SCREEN, timeout=PLAY_TIMEOUT),
        )
        await screen.close()
        screen = None
        await one_slot.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT)
        assert fps(one_slot, 1.0) >= 25
    finally:
        await asyncio.gather(two_slots.close(), one_slot.close())
        if screen is not None:
            await screen.close()
        await camera.close()


def ladder_frames(node: Node) -> float:
    """Frames the node's own ladder worker processed so far (its /metrics)."""
    with urllib.request.urlopen(f"{node.base}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    found = re.search(r"^ketang_ladder_frame_seconds_count (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(120)
async def test_an_edge_takes_renditions_from_the_origin_instead_of_making_them(
    nodes: list[Node],
) -> None:
    a, b, _ = nodes
    video = CounterVideoTrack(tag=TAG_CAMERA, fps=30, width=960, height=540)
    teacher = token(ROOM, "teacher", "Ms Zhao")
    publication = await whip_publish(a.base, ROOM, teacher, "camera", video, ToneAudioTrack())
    capped = await whep_play(b.base, ROOM, token(ROOM, "classroom", "Hill"), quality="180p")
    log = capped.video[0]
    try:

        def rung() -> bool:
            return sum((r.width, r.height) == (320, 180) for r in log.records) >= 60

        assert await settled(rung, timeout=PLAY_TIMEOUT), {(r.width, r.height) for r in log.records}
        assert fps(capped, 1.0) >= 25
        assert ladder_frames(a) > 30 and ladder_frames(b) == 0  # made once, at the origin
    finally:
        await capped.close()
        await publication.close()


@pytest.mark.timeout(60)
async def test_when_the_teacher_ends_the_lesson_it_ends_on_the_edges_too(nodes: list[Node]) -> None:
    a, b, _ = nodes
    publication = await teach(a)
    classroom = await join(b, "Hill School")
    try:
        await classroom.wait_frames(0, 30, TAG_CAMERA, timeout=PLAY_TIMEOUT)
        assert b.health()["lessons_live"] == 1
        await publication.close()
        ended = await settled(lambda: b.health()["lessons_live"] == 0, timeout=5)
        assert ended  # the edge's pages say "ended", not a frozen picture
        await asyncio.sleep(2.5)  # a directory round later the edge has not pulled it again
        assert b.health()["lessons_live"] == 0
        publication = await teach(a)  # the teacher starts again: the edge follows
        await classroom.wait_frames(0, 30, TAG_CAMERA, timeout=PLAY_TIMEOUT)
    finally:
        await classroom.close()
        await publication.close()
