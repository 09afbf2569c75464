"""The cluster directory against a real redis-server: registry, leases, sessions, events, and
what callers see while Redis is down or after it came back empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from relay.cluster.directory import Directory, NodeInfo, SessionEntry, connect
from relay.core.errors import Overloaded, status_of
from tests.redis_server import RedisServer

TTL = 10.0  # seconds: longer than any test, for records that must not expire
LEASE = 10.0


def node(node_id: str, load: float = 0.0) -> NodeInfo:
    return NodeInfo(node_id, f"http://{node_id}.example:8080", load, 8081)


@pytest.fixture
async def other(redis_server: RedisServer) -> AsyncIterator[Directory]:
    """A second node's directory: its own client, its own connections."""
    directory = Directory(connect(redis_server.url))
    try:
        yield directory
    finally:
        await directory.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client, to look at the keys the directory left."""
    client = connect(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_node_that_heartbeats_is_listed_with_its_url_load_and_media_port(
    directory: Directory,
) -> None:
    info = NodeInfo("a", "http://10.0.0.5:8081", 3.0, 40000)
    assert await directory.heartbeat(info, TTL) is True  # Redis had no record of it yet
    assert await directory.heartbeat(info, TTL) is False
    assert await directory.nodes() == [info]


async def test_nodes_are_listed_by_id_with_their_latest_load(directory: Directory) -> None:
    for info in (node("b", 1.0), node("a", 2.0), node("b", 5.0)):
        await directory.heartbeat(info, TTL)
    assert await directory.nodes() == [node("a", 2.0), node("b", 5.0)]


async def test_a_node_whose_heartbeat_expires_disappears_and_is_pruned(
    directory: Directory, raw: Redis
) -> None:
    await directory.heartbeat(node("a"), 0.5)
    await directory.heartbeat(node("b"), TTL)
    await asyncio.sleep(0.8)
    assert [n.id for n in await directory.nodes()] == ["b"]
    assert await raw.smembers("ketang:nodes") == {"b"}


async def test_a_node_that_leaves_is_gone_at_once(directory: Directory) -> None:
    await directory.heartbeat(node("a"), TTL)
    await directory.leave("a")
    assert await directory.nodes() == []


async def test_two_nodes_claiming_rooms_at_once_get_exactly_one_origin_each(
    directory: Directory, other: Directory
) -> None:
    for room in (f"room-{i}" for i in range(20)):
        mine, theirs = await asyncio.gather(
            directory.claim_origin(room, "a", LEASE), other.claim_origin(room, "b", LEASE)
        )
        assert mine == theirs
        assert mine in ("a", "b")
        assert await directory.origin_of(room) == mine


async def test_claiming_again_renews_our_lease_and_tells_others_the_holder(
    directory: Directory,
) -> None:
    assert await directory.claim_origin("r", "a", 0.4) == "a"
    await asyncio.sleep(0.25)
    assert await directory.claim_origin("r", "a", LEASE) == "a"
    await asyncio.sleep(0.3)  # past the first lease
    assert await directory.claim_origin("r", "b", LEASE) == "a"


async def test_a_lease_expires_when_not_renewed(directory: Directory) -> None:
    await directory.claim_origin("r", "a", 0.3)
    await asyncio.sleep(0.5)
    assert await directory.origin_of("r") is None
    assert await directory.claim_origin("r", "b", LEASE) == "b"


async def test_renew_keeps_ours_and_reports_rooms_lost_to_a_take_over(
    directory: Directory, other: Directory
) -> None:
    for room in ("r1", "r2", "r3"):
        await directory.claim_origin(room, "a", 0.4)
    assert await other.take_over("r2", "b", "a", LEASE) is True  # "a" looked dead to "b"
    await asyncio.sleep(0.25)
    assert await directory.renew(["r1", "r2", "r3"], "a", LEASE) == ["r2"]
    await asyncio.sleep(0.3)  # past the first lease: only renewed leases are left
    assert [await directory.origin_of(r) for r in ("r1", "r2", "r3")] == ["a", "b", "a"]


async def test_renew_reports_a_lease_that_expired_and_renews_nothing(
    directory: Directory,
) -> None:
    await directory.claim_origin("r", "a", 0.2)
    await asyncio.sleep(0.4)
    assert await directory.renew(["r"], "a", LEASE) == ["r"]
    assert await directory.origin_of("r") is None
    assert await directory.renew([], "a", LEASE) == []


async def test_take_over_fails_when_the_lease_names_another_node(directory: Directory) -> None:
    await directory.claim_origin("r", "a", LEASE)
    assert await directory.take_over("r", "c", "b", LEASE) is False
    assert await directory.origin_of("r") == "a"


async def test_take_over_fails_on_a_free_room(directory: Directory) -> None:
    assert await directory.take_over("r", "c", "b", LEASE) is False
    assert await directory.origin_of("r") is None


async def test_of_two_nodes_taking_over_a_stale_lease_one_wins(
    directory: Directory, other: Directory
) -> None:
    await directory.claim_origin("r", "dead", LEASE)
    results = await asyncio.gather(
        directory.take_over("r", "a", "dead", LEASE), other.take_over("r", "b", "dead", LEASE)
    )
    assert sorted(results) == [False, True]
    assert await directory.origin_of("r") == ("a" if results[0] else "b")


async def test_only_the_holder_releases_a_lease(directory: Directory) -> None:
    await directory.claim_origin("r", "a", LEASE)
    assert await directory.release_origin("r", "b") is False
    assert await directory.origin_of("r") == "a"
    assert await directory.release_origin("r", "a") is True
    assert await directory.origin_of("r") is None


async def test_a_session_index_entry_round_trips_until_forgotten(
    directory: Directory, other: Directory
) -> None:
    await directory.index_session("s1", "a", "r1", TTL)
    assert await other.session("s1") == SessionEntry("a", "r1")
    assert await other.session("unknown") is None
    await other.forget_session("s1")
    assert await directory.session("s1") is None


async def test_a_session_index_entry_expires_after_its_ttl(directory: Directory) -> None:
    await directory.index_session("s1", "a", "r1", 0.2)
    await asyncio.sleep(0.4)
    assert await directory.session("s1") is None


async def test_rebuild_after_redis_restarted_empty_restores_origins_and_sessions(
    directory: Directory, other: Directory, redis_server: RedisServer
) -> None:
    await directory.heartbeat(node("a"), TTL)
    for room in ("r1", "r2"):
        await directory.claim_origin(room, "a", LEASE)
    await directory.index_session("s1", "a", "r1", TTL)
    redis_server.stop()
    redis_server.start()
    assert await directory.heartbeat(node("a"), TTL) is True  # Redis lost us: rebuild
    assert await directory.origin_of("r1") is None
    assert await other.claim_origin("r2", "b", LEASE) == "b"  # claimed meanwhile
    sessions = [("s1", "r1"), ("s2", "r2")]
    assert await directory.rebuild("a", ["r1", "r2"], sessions, LEASE, TTL) == ["r2"]
    assert [await other.origin_of(r) for r in ("r1", "r2")] == ["a", "b"]
    assert await other.session("s1") == SessionEntry("a", "r1")
    assert await other.session("s2") == SessionEntry("a", "r2")


async def _enter_subscription(directory: Directory) -> None:
    async with directory.subscribe():
        pass


CALLS: dict[str, Callable[[Directory], Awaitable[object]]] = {
    "heartbeat": lambda d: d.heartbeat(node("a"), TTL),
    "nodes": lambda d: d.nodes(),
    "leave": lambda d: d.leave("a"),
    "claim_origin": lambda d: d.claim_origin("r", "a", LEASE),
    "renew": lambda d: d.renew(["r"], "a", LEASE),
    "origin_of": lambda d: d.origin_of("r"),
    "release_origin": lambda d: d.release_origin("r", "a"),
    "take_over": lambda d: d.take_over("r", "a", "b", LEASE),
    "index_session": lambda d: d.index_session("s", "a", "r", TTL),
    "session": lambda d: d.session("s"),
    "forget_session": lambda d: d.forget_session("s"),
    "rebuild": lambda d: d.rebuild("a", ["r"], [("s", "r")], LEASE, TTL),
    "publish": lambda d: d.publish("r", {"kind": "x"}),
    "subscribe": _enter_subscription,
}


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_while_redis_is_down_every_call_answers_503_with_retry_after_in_time(
    directory: Directory, redis_server: RedisServer, name: str
) -> None:
    await directory.nodes()  # a pooled connection to the server that is about to go
    redis_server.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overloaded) as raised:
        await CALLS[name](directory)
    assert loop.time() - started < 2.5
    assert raised.value.retry_after == 5
    status, message = status_of(raised.value)
    assert status == 503
    assert message.startswith("cluster directory unreachable: ")  # rebuild names its step
    assert str(redis_server.port) not in message  # nor host nor port reach the caller


async def test_a_redis_that_never_answers_costs_a_call_at_most_its_bound() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and disconnects
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    directory = Directory(connect(f"redis://127.0.0.1:{port}/0"), call_timeout=0.5)
    loop = asyncio.get_running_loop()
    try:
        for name in ("origin_of", "heartbeat", "subscribe"):
            started = loop.time()
            with pytest.raises(Overloaded):
                await CALLS[name](directory)
            assert loop.time() - started < 1.0
    finally:
        await directory.aclose()
        server.close()
        await server.wait_closed()


async def test_a_room_event_reaches_a_subscriber_of_every_room(
    directory: Directory, other: Directory
) -> None:
    async with directory.subscribe() as events:
        assert await other.publish("r1", {"kind": "started", "n": 1}) == 1
        assert await events.get(timeout=2) == ("r1", {"kind": "started", "n": 1})
        assert await events.get(timeout=0.05) is None


async def test_room_events_iterate_in_order_and_keep_odd_room_names(
    directory: Directory, other: Directory
) -> None:
    rooms = ["a:b", "*", "教室 1"]
    async with directory.subscribe() as events:
        for i, room in enumerate(rooms):
            await other.publish(room, {"i": i})
        received = []
        async for event in events:
            received.append(event)
            if len(received) == len(rooms):
                break
    assert received == [(room, {"i": i}) for i, room in enumerate(rooms)]


async def test_a_subscriber_hears_rooms_again_once_redis_is_back(
    directory: Directory, other: Directory, redis_server: RedisServer
) -> None:
    async with directory.subscribe() as events:
        redis_server.stop()
        with pytest.raises(Overloaded):
            await events.get(timeout=0.5)
        redis_server.start()
        await events.get(timeout=0.5)  # reconnects and subscribes again
        assert await other.publish("r1", {"back": True}) == 1
        assert await events.get(timeout=2) == ("r1", {"back": True})


async def test_the_directory_refuses_a_client_that_returns_bytes(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_url(redis_server.url)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            Directory(client)
    finally:
        await client.aclose()
