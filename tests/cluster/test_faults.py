"""A cluster lesson through faults: an edge killed, the origin killed, Redis stopped and back.

Each test prints the figure it measures (`-s`): the gap the classrooms saw and how long the
cluster took to recover.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.nodes import Node
from tests.cluster.test_cascade import PLAY_TIMEOUT, fps, gap_across, join, teach
from tests.peers import Playback, SignallingError
from tests.redis_server import RedisServer


async def playing(classrooms: list[Playback]) -> None:
    """Every classroom gets 30 new frames of the lesson."""
    await asyncio.gather(*(p.wait_frames(0, 30, timeout=PLAY_TIMEOUT) for p in classrooms))


@pytest.mark.timeout(120)
async def test_a_killed_edges_classroom_plays_again_through_another_node_within_10_s(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    publication = await teach(a)
    on_b, on_c = await join(b, "Hill School"), await join(c, "River School")
    moved: Playback | None = None
    try:
        await playing([on_b, on_c])
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        b.kill()
        await on_b.drop()
        moved = await join(c, "Hill School")  # what the page does once its connection failed
        await playing([moved])
        recovered = loop.time() - killed_at
        untouched = gap_across(on_c, killed_at)
        print(f"\nedge killed: its classroom plays through C after {recovered:.2f} s; "
              f"C's own classroom's longest gap {untouched:.2f} s")  # fmt: skip
        assert recovered < 10 and untouched < 0.5 and fps(on_c) >= 25
    finally:
        await asyncio.gather(*(p.close() for p in (on_c, moved) if p is not None))
        await publication.close()


@pytest.mark.timeout(120)
async def test_when_the_origin_dies_the_teacher_republishes_elsewhere_and_classrooms_stay(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    publication = await teach(a)
    classrooms = [await join(b, "Hill School"), await join(c, "River School")]
    try:
        await playing(classrooms)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        a.kill()
        await publication.drop()
        publication = await teach(b)  # what the teacher page does when its connection fails
        await playing(classrooms)  # on the sessions they had
        recovered = loop.time() - killed_at
        gaps = [gap_across(p, killed_at) for p in classrooms]
        print(f"\norigin killed: classrooms play again {recovered:.2f} s later on the same "
              f"sessions; longest gap {max(gaps):.2f} s")  # fmt: skip
        assert recovered < 10 and min(fps(p) for p in classrooms) >= 25
    finally:
        await asyncio.gather(*(p.close() for p in classrooms))
        await publication.close()


@pytest.mark.timeout(120)
async def test_without_redis_lessons_play_on_and_only_unknown_rooms_get_503(
    nodes: list[Node], redis_server: RedisServer
) -> None:
    a, b, c = nodes
    publication = await teach(a)
    classrooms = [await join(b, "Hill School")]
    try:
        await playing(classrooms)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        redis_server.stop()
        classrooms.append(await join(b, "Lake School"))  # B serves the room already
        await playing(classrooms)
        with pytest.raises(SignallingError) as refused:
            await join(c, "Field School")  # C would need the directory to find the origin
        assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) > 0
        await asyncio.sleep(3)
        assert gap_across(classrooms[0], stopped_at) < 0.5 and fps(classrooms[0]) >= 25
        redis_server.start()  # back, empty: the nodes rebuild the directory
        restarted_at = loop.time()
        late = await wait_admitted(c)
        classrooms.append(late)
        await playing([late])
        rebuilt = loop.time() - restarted_at
        gap = gap_across(classrooms[0], stopped_at)
        print(f"\nRedis down and back: classrooms' longest gap {gap:.2f} s; a node new to the "
              f"room played it {rebuilt:.2f} s after Redis came back")  # fmt: skip
        assert gap < 0.5
    finally:
        await asyncio.gather(*(p.close() for p in classrooms))
        await publication.close()


async def wait_admitted(node: Node) -> Playback:
    """Join as soon as the node takes new rooms again (it answers 503 until then)."""
    for _ in range(100):
        try:
            return await join(node, "Field School")
        except SignallingError as error:
            assert error.status == 503
            await asyncio.sleep(0.2)
    raise TimeoutError("the node never took the room")
