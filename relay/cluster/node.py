"""This relay process as a node of a cluster (`--redis-url`): its record in the directory, the
rooms it is the origin of, and the lessons it pulls from other nodes for its own classrooms.

- The node whose teacher publishes a room is the room's **origin**: it claims the room's lease
  in the directory (taking it over from another node: the teacher moved) and renews it while
  the teacher is there. The recording is made there, once.
- A node with classrooms of a room whose origin is elsewhere is an **edge**: it pulls the
  lesson from the origin over WHEP with a `node` token, once for all its classrooms
  (`RoomRuntime.pull`), and fans it out locally. Keyframe requests and NACKs go upstream
  through that one pull, coalesced at each hop. When the pull dies (the origin went away),
  the next round pulls again from whichever node is the origin then; classrooms keep their
  sessions and resume at the next keyframe.
- Every HEARTBEAT_SECONDS the node rewrites its record (with its load), renews its leases and
  starts or ends pulls. While Redis is unreachable the lessons in progress go on untouched;
  the rounds fail, are logged once, and resume when it is back (the node re-asserts its
  origins and its record then).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from monitoring import metrics
from relay import tokens
from relay.cluster.directory import Directory, NodeInfo
from relay.core.errors import BadRequest, KetangError
from relay.core.model import Event, SourceEnded, SourceStarted
from relay.registry import Registry
from relay.runtime import Exchange, RoomRuntime

logger = logging.getLogger(__name__)

# A node rewrites its record and renews its leases this often; three missed rounds and it is
# gone (NODE_TTL), and a lease outlives a dead origin by at most LEASE_SECONDS.
HEARTBEAT_SECONDS = 2.0
NODE_TTL = 6.0
LEASE_SECONDS = 6.0
# Seconds a pull's WHEP request may take (the origin answers with gathered candidates).
PULL_TIMEOUT = 10.0
# Lifetime of the node token a pull presents: one lesson, with margin.
PULL_TOKEN_TTL = 6 * 3600
# On the 201 answering a node's pull: the sources live at the origin, comma-separated.
SOURCES_HEADER = "Ketang-Sources"
# Seconds a session stays in the index: longer than any school day's lesson.
SESSION_TTL = 12 * 3600
# What a forwarded session request carries (the token, the ICE session tag, the body type)
# and what its answer keeps.
FORWARDED_HEADERS = frozenset({"Authorization", "If-Match", "Content-Type"})
ANSWERED_HEADERS = frozenset({"Content-Type", "ETag", "Retry-After"})


def new_node_id() -> str:
    """Unique per process, readable in logs: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Pull:
    """A pull this node runs for one room: from which node, and where to DELETE it."""

    origin: str
    session: str
    location: str


@dataclass
class ClusterNode:
    """One node's part of the cluster; `round()` is its periodic work."""

    directory: Directory
    info: NodeInfo
    registry: Registry
    secret: bytes
    origins: set[str] = field(default_factory=set)
    pulls: dict[str, Pull] = field(default_factory=dict)
    _starting: set[str] = field(default_factory=set)
    _failing: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    placement_gap: int = 20  # config.cluster.placement_gap
    _sent: dict[str, int] = field(default_factory=dict)  # classrooms sent per node, lately
    _ended: dict[str, str] = field(default_factory=dict)  # room -> origin whose lesson ended
    # this process's own view of a room, as its pages would see it (set by the app)
    local_state: Callable[[str], dict[str, Any]] | None = None
    # room -> node -> (it teaches the room, its state of it, loop time it was heard)
    _views: dict[str, dict[str, tuple[bool, dict[str, Any], float]]] = field(default_factory=dict)

    def on_event(self, event: Event) -> None:
        """A room event of this process: a teacher starting here claims the room at once,
        and the edges hear at once when a source starts or ends at the origin."""
        if isinstance(event, SourceStarted | SourceEnded):  # claim, or give up, at once
            self._wake.set()
        if isinstance(event, SourceStarted | SourceEnded):
            runtime = self.registry.find(event.room)
            # the origin tells its sources, the last one ending included (the lesson ended)
            if runtime is not None and (runtime.teaching or event.room in self.origins):
                live = sorted(runtime.model.publishers)
                message = {"type": "sources", "node": self.info.id, "live": live}
                self._spawn(self._announce(event.room, message))

    def _forget_old_views(self, now: float) -> None:
        for room in list(self._views):
            heard = self._views[room]
            for node in [n for n, (_, _, at) in heard.items() if now - at >= NODE_TTL]:
                del heard[node]
            if not heard:
                del self._views[room]

    async def _announce(self, room: str, message: dict[str, Any]) -> None:
        try:
            await self.directory.publish(room, message)
        except KetangError as error:
            logger.warning("room %s: sources not announced: %s", room, error)

    def _heard(self, room: str, message: dict[str, Any]) -> None:
        """Another node's announcement: follow a moved teacher, or a source of our origin."""
        sender = message.get("node")
        if sender == self.info.id:
            return
        state = message.get("state")
        if message.get("type") == "view" and isinstance(state, dict) and isinstance(sender, str):
            now = asyncio.get_running_loop().time()
            self._views.setdefault(room, {})[sender] = (bool(message.get("origin")), state, now)
            self._forget_old_views(now)
        pull, runtime, live = self.pulls.get(room), self.registry.find(room), message.get("live")
        if message.get("type") == "origin" or (message.get("type") == "sources" and live):
            self._ended.pop(room, None)  # a lesson (re)starts there
            self._wake.set()
        if message.get("type") != "sources" or pull is None or runtime is None:
            return
        if sender != pull.origin or not isinstance(live, list):
            return
        if live:
            runtime.pulled_sources(pull.session, frozenset(map(str, live)))
        else:  # the lesson ended at the origin: it ends here too (pages say so)
            self._ended[room] = pull.origin  # and is not pulled again until it starts there
            self._spawn(self._stop_pull(runtime, pull))

    async def run(self) -> None:
        """Rounds until cancelled: at least every HEARTBEAT_SECONDS, sooner when woken."""
        while True:
            self._wake.clear()  # before the round: a wake during it brings the next one at once
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT_SECONDS)

    async def admit(self, room: str) -> None:
        """Before a new session: a room this node serves already plays on without Redis; any
        other needs the directory (to find its origin), so an outage is a 503 for it."""
        runtime = self.registry.find(room)
        if runtime is None or not runtime.active:
            await self.directory.origin_of(room)

    async def place(self, path_qs: str) -> str | None:
        """Where a new classroom should go instead of here: the least busy node that takes
        classrooms directly, when this one serves `placement_gap` sessions more; None to
        serve it here (as the origin or an edge). Best effort: no directory, no move."""
        try:
            nodes = await self.directory.nodes()
        except KetangError:
            return None
        others = [n for n in nodes if n.id != self.info.id and n.public_url is not None]
        if not others:
            return None
        best = min(others, key=lambda n: n.load + self._sent.get(n.id, 0))
        if self.load() - (best.load + self._sent.get(best.id, 0)) <= self.placement_gap:
            return None
        self._sent[best.id] = self._sent.get(best.id, 0) + 1  # until its next heartbeat
        return f"{str(best.public_url).rstrip('/')}{path_qs}"

    def load(self) -> float:
        """Sessions this node serves: what the directory's placement compares."""
        return float(sum(len(r.players) + len(r.publishers) for r in self.registry))

    async def index(self, session_id: str, room: str) -> None:
        """Note a new session's node, so its `Location` works through any node; a Redis
        outage costs only that (the session itself plays on)."""
        try:
            await self.directory.index_session(session_id, self.info.id, room, SESSION_TTL)
        except KetangError as error:
            logger.warning("session %s not indexed: %s", session_id, error)

    async def forward(self, request: web.Request, session_id: str) -> web.Response | None:
        """Send a DELETE or PATCH for a session another node holds to that node and return
        its answer; None when no other live node holds it."""
        entry = await self.directory.session(session_id)
        if entry is None or entry.node_id == self.info.id:
            return None
        live = {n.id: n for n in await self.directory.nodes()}
        node = live.get(entry.node_id)
        if node is None:
            return None
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
        body = await request.read()
        timeout = aiohttp.ClientTimeout(total=PULL_TIMEOUT)
        url = node.url + request.path_qs
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.request(request.method, url, data=body, headers=headers) as reply,
            ):
                kept = {k: v for k, v in reply.headers.items() if k in ANSWERED_HEADERS}
                return web.Response(status=reply.status, body=await reply.read(), headers=kept)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:  # it died meanwhile
            logger.info("forwarding to %s failed: %s", node.id, error)
            return None

    async def listen(self) -> None:
        """Wake the round when another node announces it became a room's origin, so edges
        follow a moving teacher at once instead of at their next round."""
        while True:
            try:
                async with self.directory.subscribe() as events:
                    async for room, message in events:
                        self._heard(room, message)
            except KetangError:  # Redis is away: the rounds report it; listen again later
                await asyncio.sleep(HEARTBEAT_SECONDS)

    def views(self, room: str) -> list[tuple[bool, dict[str, Any]]]:
        """What the other nodes serving `room` last said of it (heard within NODE_TTL)."""
        now = asyncio.get_running_loop().time()
        heard = self._views.get(room, {})
        return [(teaching, state) for teaching, state, at in heard.values() if now - at < NODE_TTL]

    def rooms(self) -> set[str]:
        """Rooms other nodes serve now."""
        return {room for room in self._views if self.views(room)}

    async def _tell_views(self) -> None:
        """Every room this node serves, as its pages see it, for the other nodes' pages."""
        if self.local_state is None:
            return
        for runtime in self.registry:
            if runtime.active:
                state = self.local_state(runtime.name)
                message = {"type": "view", "node": self.info.id, "origin": runtime.teaching}
                await self.directory.publish(runtime.name, {**message, "state": state})

    async def round(self) -> None:
        """Heartbeat, leases, pulls, views; a Redis outage costs the round, never the
        lessons."""
        try:
            live = await self._heartbeat()
            await self._claim_and_renew()
            await self._follow_origins(live)
            await self._tell_views()
        except KetangError as error:
            if not self._failing:
                logger.warning("cluster round failed: %s", error)
            self._failing = True
            return
        if self._failing:
            logger.info("cluster directory reachable again")
            self._failing = False

    async def _heartbeat(self) -> dict[str, NodeInfo]:
        """Rewrite this node's record; when Redis had lost it (restarted empty, or this node
        was away), re-assert its leases and sessions first. Returns the live nodes by id."""
        info = dataclasses.replace(self.info, load=self.load())
        sessions = [(s, r.name) for r in self.registry for s in (*r.publishers, *r.players)]
        if await self.directory.heartbeat(info, NODE_TTL) and (self.origins or sessions):
            lost = await self.directory.rebuild(
                self.info.id, sorted(self.origins), sessions, LEASE_SECONDS, SESSION_TTL
            )
            self._give_up(lost)
        live = await self.directory.nodes()
        self._sent = {}  # the loads just read count the classrooms sent since
        metrics.set_cluster_nodes(len(live))
        return {n.id: n for n in live}

    async def _claim_and_renew(self) -> None:
        """Hold the lease of every room a teacher publishes here; give up the others."""
        teaching = {r.name for r in self.registry if r.teaching}
        for room in teaching - self.origins:
            holder = await self.directory.claim_origin(room, self.info.id, LEASE_SECONDS)
            if holder != self.info.id:  # the teacher moved here from `holder`
                moved = await self.directory.take_over(room, self.info.id, holder, LEASE_SECONDS)
                if not moved:  # a third node took it meanwhile: try again next round
                    continue
                logger.info("room %s: origin moves here from %s", room, holder)
            self.origins.add(room)
            await self.directory.publish(room, {"type": "origin", "node": self.info.id})
        for room in self.origins - teaching:
            await self.directory.release_origin(room, self.info.id)
            self.origins.discard(room)
        lost = await self.directory.renew(sorted(self.origins), self.info.id, LEASE_SECONDS)
        taken = []
        for room in lost:  # the directory forgot us (Redis restarted): claim it again
            if await self.directory.claim_origin(room, self.info.id, LEASE_SECONDS) != self.info.id:
                taken.append(room)
        self._give_up(taken)

    def _give_up(self, rooms: list[str]) -> None:
        """Another node holds these rooms' leases now: stop acting as their origin (a
        teacher publishing here too is a conflict the rounds retry to resolve)."""
        for room in rooms:
            logger.warning("room %s: another node is its origin now", room)
            self.origins.discard(room)

    async def _follow_origins(self, live: dict[str, NodeInfo]) -> None:
        """Pull each room whose classrooms are here and whose teacher is elsewhere, from the
        node that is its origin now; end pulls nobody here watches or whose origin moved. A
        room with no origin in the directory keeps its pull (Redis may have restarted empty,
        and its origin re-claims it in its next round)."""
        for runtime in self.registry:
            pull = self.pulls.get(runtime.name)
            if pull is not None and pull.session not in runtime.publishers:
                del self.pulls[runtime.name]  # it died (the origin went away)
                pull = None
            if not runtime.watched or runtime.teaching:
                if pull is not None:
                    await self._stop_pull(runtime, pull)
                continue
            origin = await self.directory.origin_of(runtime.name)
            node = live.get(origin) if origin is not None else None
            if node is None or node.id == self.info.id:
                continue
            if pull is not None and node.id != pull.origin:
                await self._stop_pull(runtime, pull)
                pull = None
            ended_there = self._ended.get(runtime.name) == node.id
            if pull is None and runtime.name not in self._starting and not ended_there:
                self._spawn(self._start_pull(runtime, node))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a pull's start beside the rounds (it takes an ICE and DTLS handshake)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_pull(self, runtime: RoomRuntime, origin: NodeInfo) -> None:
        name = runtime.name
        self._starting.add(name)
        location: list[str] = []
        try:
            session = await runtime.pull(origin.id, self._exchange(origin, name, location))
            self.pulls[name] = Pull(origin.id, session, location[0])
            logger.info("room %s: pulling the lesson from %s", name, origin.id)
        except (KetangError, aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning("room %s: pull from %s failed: %s", name, origin.id, error)
        finally:
            self._starting.discard(name)

    def _exchange(self, origin: NodeInfo, room: str, location: list[str]) -> Exchange:
        """The WHEP request of a pull: our offer to the origin; its answer and live sources
        back."""

        async def exchange(offer: str, rung: str | None) -> tuple[str, frozenset[str]]:
            token = tokens.issue(self.secret, room, "node", self.info.id, PULL_TOKEN_TTL)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
            url = f"{origin.url}/whep/{room}" + (f"?quality={rung}" if rung else "")
            timeout = aiohttp.ClientTimeout(total=PULL_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, data=offer, headers=headers) as reply,
            ):
                body = await reply.text()
                if reply.status != 201:
                    raise BadRequest(f"origin answered {reply.status}: {body.strip()[:200]}")
                if rung is None:  # the lesson's pull: the one DELETEd when it is not needed
                    location.append(str(reply.url.join(URL(reply.headers["Location"]))))
                live = reply.headers.get(SOURCES_HEADER, "")
                return body, frozenset(s for s in live.split(",") if s)

        return exchange

    async def _stop_pull(self, runtime: RoomRuntime, pull: Pull) -> None:
        """End a pull here and at the origin: nobody here watches the room any more, its
        origin moved, or its lesson ended there."""
        if self.pulls.get(runtime.name) is pull:
            del self.pulls[runtime.name]
        with contextlib.suppress(KetangError):  # it may have ended meanwhile
            await runtime.end(pull.session)
        token = tokens.issue(self.secret, runtime.name, "node", self.info.id, 60)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                await http.delete(pull.location, headers={"Authorization": f"Bearer {token}"})
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.info("room %s: ending the pull at %s: %s", runtime.name, pull.origin, error)

    async def leave(self) -> None:
        """Shutdown: give up leases and the node's record, so others take over at once."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            for room in sorted(self.origins):
                await self.directory.release_origin(room, self.info.id)
            await self.directory.leave(self.info.id)
        except KetangError as error:
            logger.warning("leaving the cluster: %s", error)
        await self.directory.aclose()
