"""The cluster's directory in Redis: live nodes, each room's origin, and where sessions live.

Redis is the one shared truth of a cluster; every expiry runs on the Redis server's clock, so
nodes never compare clocks. Keys, under the prefix ("ketang:"): `nodes` (set of ids),
`node:<id>` (NodeInfo JSON, expires), `origin:<room>` (holder's id, a lease), `session:<id>`
(SessionEntry JSON, expires); channels `room:<room>` (JSON objects).

- **Registry.** `heartbeat` rewrites a node's record with a fresh expiry; `nodes()` lists the
  records still alive. A node that stops beating is gone after at most `ttl`.
- **Origin leases.** `claim_origin` is atomic: of any number of concurrent claimers exactly one
  gets a free room, and all of them learn the same holder. The holder keeps it with `renew`
  (compare-and-expire); `release_origin` deletes only the caller's own lease.
- **Stale leases.** A lease outlives its node by at most `lease_seconds`. A node that sees a
  lease naming a node the registry no longer lists may `take_over` sooner; it succeeds only
  if the lease still names that node (compare-and-set), so of several takers one wins.
- **Losing a lease.** A node whose `renew` returns a room, or whose last successful renew of
  it began more than `lease_seconds` ago (Redis unreachable meanwhile), must stop acting as
  that room's origin: another node may hold it now.
- **Redis restarted empty.** `heartbeat` returns True when Redis had no live record of the
  node; the node then calls `rebuild` with what it holds, which re-claims its rooms unless
  another node claimed them meanwhile, and re-indexes its sessions.
- **Events.** `publish` and `subscribe` carry room events at most once: a message sent while a
  subscriber is disconnected is lost, so events are hints and the state lives in the keys.
- **Failures.** Every public method either completes within `call_timeout` or raises
  `Overloaded` (503, Retry-After) when Redis is unreachable or too slow. The client must come
  from `connect` (or be built alike): bounded socket timeouts, few retries, decoded replies.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.core.errors import Overloaded

# Seconds a client waits on a socket (connect, reply): an answer from a healthy Redis on the
# LAN takes milliseconds, so this only bounds how long an outage stalls a request.
SOCKET_TIMEOUT = 2.0
# One immediate retry reconnects a pooled connection that a restarted Redis closed; more
# would only stretch an outage past CALL_TIMEOUT.
RETRIES = 1
# A pooled connection idle this long is PINGed before use, so it is known dead up front.
HEALTH_CHECK_SECONDS = 10
# Hard bound on one public call, whatever the socket does: a request that needs the
# directory answers 503 by then instead of hanging (slightly over one socket timeout).
CALL_TIMEOUT = 2.5
# Retry-After of the 503 when Redis is unreachable: a restarting Redis is back in seconds.
RETRY_AFTER = 5
# Seconds `RoomEvents.__anext__` waits per poll; bounded so a dead connection is noticed.
POLL_SECONDS = 1.0

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)  # OSError has TimeoutError

# Lua, so that each compare-and-act is atomic in Redis.
_CLAIM = """local holder = redis.call('GET', KEYS[1])
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1] end
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return holder"""
_RENEW = """local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2])
  else table.insert(lost, i) end
end
return lost"""
_RELEASE = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])"""
_TAKE_OVER = """if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1"""
_PRUNE = """if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('SREM', KEYS[1], ARGV[1])"""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as the others see it: where to reach it and how busy it is."""

    id: str
    url: str  # base URL other nodes reach it on, e.g. http://10.0.0.5:8081
    load: float  # sessions it serves
    media_port: int  # its one UDP media port
    public_url: str | None = None  # where classrooms may be sent to it (307); None: nowhere

    def to_json(self) -> str:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        """Known fields only, so a newer node's extra fields do not break an older one."""
        data = json.loads(text)
        public = data.get("public_url")
        return cls(
            str(data["id"]),
            str(data["url"]),
            float(data["load"]),
            int(data["media_port"]),
            str(public) if public else None,
        )


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """Where a session lives, so a DELETE or PATCH on its Location works on any node."""

    node_id: str
    room: str

    def to_json(self) -> str:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SessionEntry:
        data = json.loads(text)
        return cls(str(data["node_id"]), str(data["room"]))


def connect(url: str) -> Redis:
    """The client a Directory needs: bounded timeouts, one quick retry, str replies."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=HEALTH_CHECK_SECONDS,
        retry=Retry(NoBackoff(), RETRIES),
        decode_responses=True,
    )


class Directory:
    """Shared cluster state in one Redis; see the module docstring for the semantics."""

    def __init__(
        self, redis: Redis, prefix: str = "ketang:", call_timeout: float = CALL_TIMEOUT
    ) -> None:
        if not redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the directory's Redis client needs decode_responses=True")
        self._redis = redis
        self._prefix = prefix
        self._call_timeout = call_timeout  # seconds, the bound on each public call
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._prune = redis.register_script(_PRUNE)

    async def aclose(self) -> None:
        """Close the client's connections at shutdown (the directory is its one user)."""
        await self._redis.aclose()

    # registry

    async def heartbeat(self, info: NodeInfo, ttl: float) -> bool:
        """Rewrite the node's record for `ttl` more seconds; True if Redis had lost it."""
        async with _bounded("heartbeat", self._call_timeout), self._redis.pipeline() as pipe:
            pipe.set(self._key("node", info.id), info.to_json(), px=_ms(ttl), get=True)
            pipe.sadd(self._key("nodes"), info.id)
            previous, _ = await pipe.execute()
        return previous is None

    async def nodes(self) -> list[NodeInfo]:
        """The nodes whose record has not expired, by id; the expired ones are pruned."""
        async with _bounded("nodes", self._call_timeout):
            ids = sorted(cast("set[str]", await self._redis.smembers(self._key("nodes"))))
            keys = [self._key("node", node_id) for node_id in ids]
            records = cast("list[str | None]", await self._redis.mget(keys) if ids else [])
            for node_id, record in zip(ids, records, strict=True):
                if record is None:
                    keys = [self._key("nodes"), self._key("node", node_id)]
                    await self._prune(keys=keys, args=[node_id])
        return [NodeInfo.from_json(r) for r in records if r is not None]

    async def leave(self, node_id: str) -> None:
        """Remove the node's record at shutdown, so nobody waits out its ttl."""
        async with _bounded("leave", self._call_timeout), self._redis.pipeline() as pipe:
            pipe.delete(self._key("node", node_id))
            pipe.srem(self._key("nodes"), node_id)
            await pipe.execute()

    # origin leases

    async def claim_origin(self, room: str, node_id: str, lease_seconds: float) -> str:
        """The room's origin after the call: us if it was free or ours (renewed), else the
        holder."""
        async with _bounded("claim_origin", self._call_timeout):
            keys = [self._key("origin", room)]
            return str(await self._claim(keys=keys, args=[node_id, _ms(lease_seconds)]))

    async def renew(self, rooms: Iterable[str], node_id: str, lease_seconds: float) -> list[str]:
        """Extend the leases still ours; the rooms returned are lost and must be let go."""
        rooms = list(rooms)
        if not rooms:
            return []
        async with _bounded("renew", self._call_timeout):
            keys = [self._key("origin", room) for room in rooms]
            lost = await self._renew(keys=keys, args=[node_id, _ms(lease_seconds)])
        return [rooms[int(i) - 1] for i in lost]

    async def origin_of(self, room: str) -> str | None:
        """The node holding the room's lease, if any; where an edge pulls the lesson from."""
        async with _bounded("origin_of", self._call_timeout):
            return cast("str | None", await self._redis.get(self._key("origin", room)))

    async def release_origin(self, room: str, node_id: str) -> bool:
        """Give the room up (teacher left, shutdown); False if the lease was not ours."""
        async with _bounded("release_origin", self._call_timeout):
            return bool(await self._release(keys=[self._key("origin", room)], args=[node_id]))

    async def take_over(
        self, room: str, node_id: str, stale_node_id: str, lease_seconds: float
    ) -> bool:
        """Take the lease from `stale_node_id` (gone from the registry) if it still holds
        it; False if the lease names another node or expired (then claim it)."""
        async with _bounded("take_over", self._call_timeout):
            keys = [self._key("origin", room)]
            args: list[str | int] = [node_id, stale_node_id, _ms(lease_seconds)]
            return bool(await self._take_over(keys=keys, args=args))

    # session index

    async def index_session(self, session_id: str, node_id: str, room: str, ttl: float) -> None:
        """Record where a session lives for `ttl` seconds (re-index to extend it)."""
        entry = SessionEntry(node_id, room).to_json()
        async with _bounded("index_session", self._call_timeout):
            await self._redis.set(self._key("session", session_id), entry, px=_ms(ttl))

    async def session(self, session_id: str) -> SessionEntry | None:
        """Which node serves the session, so a request on any node reaches it."""
        async with _bounded("session", self._call_timeout):
            text = cast("str | None", await self._redis.get(self._key("session", session_id)))
        return None if text is None else SessionEntry.from_json(text)

    async def forget_session(self, session_id: str) -> None:
        """Drop a session that ended."""
        async with _bounded("forget_session", self._call_timeout):
            await self._redis.delete(self._key("session", session_id))

    async def rebuild(
        self,
        node_id: str,
        origins: Iterable[str],
        sessions: Iterable[tuple[str, str]],
        lease_seconds: float,
        ttl: float,
    ) -> list[str]:
        """Re-assert what this node holds after Redis lost it: claim its rooms and re-index
        its (session id, room) pairs; returns the rooms another node claimed meanwhile."""
        lost = [
            room
            for room in origins
            if await self.claim_origin(room, node_id, lease_seconds) != node_id
        ]
        entries = [(sid, SessionEntry(node_id, room).to_json()) for sid, room in sessions]
        if entries:
            async with _bounded("rebuild", self._call_timeout), self._redis.pipeline() as pipe:
                for session_id, entry in entries:
                    pipe.set(self._key("session", session_id), entry, px=_ms(ttl))
                await pipe.execute()
        return lost

    # room events

    async def publish(self, room: str, message: Mapping[str, Any]) -> int:
        """Send a room event to every node subscribed; returns how many received it."""
        async with _bounded("publish", self._call_timeout):
            return int(await self._redis.publish(self._key("room", room), _dumps(message)))

    def subscribe(self) -> RoomEvents:
        """Every room's events: `async with directory.subscribe() as events`."""
        channel_prefix = self._prefix + "room:"
        return RoomEvents(self._redis.pubsub(), channel_prefix, self._call_timeout)

    # helpers

    def _key(self, kind: str, name: str | None = None) -> str:
        return self._prefix + kind if name is None else f"{self._prefix}{kind}:{name}"


@asynccontextmanager
async def _bounded(operation: str, timeout: float) -> AsyncIterator[None]:
    """Bound a call and turn an outage into a 503; the cause stays in the chain for logs,
    out of the public message (it would name internal hosts)."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except UNREACHABLE as error:
        message = f"cluster directory unreachable: {operation}"
        raise Overloaded(message, retry_after=RETRY_AFTER) from error


class RoomEvents:
    """A pattern subscription to all rooms' channels, on a Redis connection of its own;
    yields (room, message). It resubscribes by itself once Redis is back."""

    def __init__(self, pubsub: PubSub, channel_prefix: str, call_timeout: float) -> None:
        self._pubsub = pubsub
        self._channel_prefix = channel_prefix  # "<prefix>room:", cut off to get the room
        self._call_timeout = call_timeout

    async def __aenter__(self) -> RoomEvents:
        """Subscribed once Redis confirmed it, so every later publish reaches us."""
        try:
            async with _bounded("subscribe", self._call_timeout):
                await self._pubsub.psubscribe(_glob_escape(self._channel_prefix) + "*")
                await self._confirmed()
        except BaseException:
            await _close(self._pubsub)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await _close(self._pubsub)

    async def get(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next room event, or None if none came within `timeout` (or it was not a JSON
        object, e.g. from a foreign publisher)."""
        async with _bounded("room events", timeout + self._call_timeout):
            reply = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if reply is None or reply["type"] != "pmessage":
            return None
        room = str(reply["channel"])[len(self._channel_prefix) :]
        try:
            data = json.loads(reply["data"])
        except ValueError:
            return None
        return (room, data) if isinstance(data, dict) else None

    def __aiter__(self) -> RoomEvents:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        """Wait for the next event; an outage ends the iteration with Overloaded."""
        while (event := await self.get(POLL_SECONDS)) is None:
            pass
        return event

    async def _confirmed(self) -> None:
        """Wait for Redis's psubscribe reply; until then a publish could pass us by."""
        while True:
            reply = await self._pubsub.get_message(timeout=self._call_timeout)
            if reply is not None and reply["type"] == "psubscribe":
                return


def _ms(seconds: float) -> int:
    """Redis expiries in whole milliseconds; a non-positive one would delete the key."""
    if seconds <= 0:
        raise ValueError(f"a ttl or lease must be positive, got {seconds}")
    return max(1, round(seconds * 1000))


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def _close(pubsub: PubSub) -> None:
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _glob_escape(text: str) -> str:
    """A prefix taken literally in a PSUBSCRIBE pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
