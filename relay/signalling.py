"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) endpoints and sessions.

Each POST checks in the order that leaves nothing behind on failure: token, room and source,
content type and size, SDP shape, the token's and the room's limits; only then is a peer
connection created, and the room closes it again if negotiation fails. A session's resource
URL acts only for the token that created it (or an admin of the room), and takes trickled
ICE candidates by PATCH (RFC 9725 §4.3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import aiohttp.http_exceptions
from aiohttp import web

from monitoring import metrics
from relay.auth import Auth
from relay.cluster.node import SOURCES_HEADER, ClusterNode
from relay.config import IceConfig, LimitsConfig, MediaConfig
from relay.core.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RequestTimeout,
    UnprocessableContent,
    UnsupportedMediaType,
)
from relay.core.ladder import LadderError, check_cap
from relay.core.sdpfrag import MEDIA_TYPE as SDPFRAG_TYPE
from relay.core.sdpfrag import parse_fragment
from relay.core.turn import IceServer, ice_servers
from relay.registry import Registry
from relay.rtc import trickle
from relay.rtc.sdp import check_offer
from relay.runtime import RoomRuntime
from relay.sessions import Ticket
from relay.tokens import Grant, validate_room

SDP_TYPE = "application/sdp"
# A trickle fragment is a few candidate lines: a few kilobytes at the most.
MAX_FRAGMENT_BYTES = 16384
# Methods each resource answers (RFC 9725 §4: POST on the endpoint; PATCH, DELETE on the
# session), for Allow on 405 and for CORS preflights.
ENDPOINT_METHODS = ("POST", "OPTIONS")
SESSION_METHODS = ("PATCH", "DELETE", "OPTIONS")
ROLES = {"whip": {"teacher"}, "whep": {"classroom", "node"}}


async def read_body(request: web.Request, media_type: str, limit: int, seconds: float) -> str:
    """The request body as text: 415 for another type, 413 over `limit` bytes, 408 when it
    does not arrive within `seconds` (a slow body holds a connection and a task)."""
    if request.content_type != media_type:
        raise UnsupportedMediaType(
            f"Content-Type must be {media_type}, not {request.content_type!r}"
        )
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(16384):
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(f"body over {limit} bytes")
    except TimeoutError:
        metrics.count_limited("body_seconds")
        raise RequestTimeout(f"the body did not arrive within {seconds:g} s") from None
    except (
        ConnectionError,
        aiohttp.ClientPayloadError,
        aiohttp.http_exceptions.HttpProcessingError,
    ):
        # the client went away mid-body: nobody to answer, nothing to log but a count
        metrics.count_limited("body_incomplete")
        raise BadRequest("the body ended before its Content-Length") from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None


def client_ice_servers(ice: IceConfig, name: str, wall: float) -> list[IceServer]:
    """The ICE servers one client gets: STUN as configured, TURN with its own credentials."""
    return ice_servers(ice.servers, ice.turn, ice.turn_secret, name, wall, ice.turn_ttl)


def link_header(servers: list[IceServer]) -> list[tuple[str, str]]:
    """ICE servers as `Link` headers (RFC 9725 §4.6)."""
    links = []
    for server in servers:
        value = f'<{server.url}>; rel="ice-server"'
        if server.username is not None:
            value += f'; username="{server.username}"; credential="{server.credential}"'
            value += '; credential-type="password"'
        links.append(("Link", value))
    return links


class Signalling:
    """The WHIP and WHEP endpoints of one relay process."""

    def __init__(
        self,
        registry: Registry,
        media: MediaConfig,
        ice: IceConfig,
        limits: LimitsConfig,
        auth: Auth,
        cluster: ClusterNode | None = None,
    ) -> None:
        self._registry = registry
        self._media = media
        self._ice = ice
        self._limits = limits
        self._auth = auth
        # a node of a cluster: it admits rooms, indexes sessions and forwards requests for
        # sessions other nodes hold
        self._cluster = cluster

    async def whip_post(self, request: web.Request) -> web.Response:
        """A teacher starts publishing one source."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, ROLES["whip"], query=False)
        source = request.query.get("source", "camera")
        if source not in ("camera", "screen"):
            raise BadRequest(f"unknown source {source!r}: use camera or screen")
        offer = await self._read_sdp(request)
        shape = check_offer(offer, sending=True)

        async def start(runtime: RoomRuntime) -> tuple[str, str]:
            return await runtime.publish(source, grant.name, offer, shape)

        return await self._create(room, "whip", grant, start)

    async def whep_post(self, request: web.Request) -> web.Response:
        """A classroom starts playing the room; allowed before the teacher starts."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, ROLES["whep"], query=False)
        cap = self._quality_cap(request)
        if self._cluster is not None and grant.role == "classroom":
            elsewhere = await self._cluster.place(request.path_qs)
            if elsewhere is not None:  # RFC 9725 §4.5: the client repeats its POST there
                raise web.HTTPTemporaryRedirect(elsewhere)
        offer = await self._read_sdp(request)
        shape = check_offer(offer, sending=False)

        async def start(runtime: RoomRuntime) -> tuple[str, str]:
            return await runtime.play(grant.name, offer, shape, cap, node=grant.role == "node")

        return await self._create(room, "whep", grant, start)

    async def _read_sdp(self, request: web.Request) -> str:
        limits = self._media.max_sdp_bytes, self._limits.body_seconds
        return await read_body(request, SDP_TYPE, *limits)

    async def _create(
        self,
        room: str,
        kind: str,
        grant: Grant,
        start: Callable[[RoomRuntime], Awaitable[tuple[str, str]]],
    ) -> web.Response:
        """Negotiate within the token's and the room's limits; 201 with the session's URL,
        its ICE session's entity tag and the ICE servers."""
        if self._cluster is not None:
            await self._cluster.admit(room)
        runtime = self._registry.get(room)
        try:
            with runtime.book.reserve(grant.id):
                session_id, answer = await start(runtime)
            ticket = runtime.admit(session_id, kind, grant.id)
        finally:
            self._registry.release(room)
        if self._cluster is not None:
            await self._cluster.index(session_id, room)
        headers = [("Location", f"/{kind}/{room}/{session_id}"), ("ETag", ticket.etag)]
        if grant.role == "node":  # an edge's pull: which sources to publish on its side
            headers.append((SOURCES_HEADER, ",".join(sorted(runtime.model.publishers))))
        servers = client_ice_servers(self._ice, grant.name, time.time())
        headers += [("Accept-Patch", SDPFRAG_TYPE), *link_header(servers)]
        response = web.Response(status=201, text=answer, content_type=SDP_TYPE)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def _quality_cap(self, request: web.Request) -> str | None:
        """The best layer a classroom asked for (`?quality=180p`, `low`, `audio`), checked."""
        try:
            return check_cap(request.query.get("quality"), self._media.renditions)
        except LadderError as error:
            raise BadRequest(str(error)) from None

    def _own_session(
        self, request: web.Request, ended: bool = False
    ) -> tuple[RoomRuntime, str, Ticket]:
        """The room and id of the session this URL names, if the token may act on it (with
        `ended`, also if it ended lately)."""
        kind = request.match_info["kind"]
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, {*ROLES[kind], "admin"}, query=False)
        session_id = request.match_info["session"]
        runtime = self._registry.find(room) if not ended else self._registry.get(room)
        try:
            if runtime is None:
                raise NotFound(f"no {kind} session {session_id!r} in room {room!r}")
            return runtime, session_id, runtime.book.check(session_id, kind, grant, ended)
        finally:
            self._registry.release(room)

    async def session_delete(self, request: web.Request) -> web.Response:
        """End a WHIP or WHEP session by its Location URL (held here, or by another node)."""
        return await self._here_or_there(request, self._delete_here)

    async def session_patch(self, request: web.Request) -> web.Response:
        """Trickle ICE for a session held here, or by another node."""
        return await self._here_or_there(request, self._patch_here)

    async def _here_or_there(
        self, request: web.Request, here: Callable[[web.Request], Awaitable[web.Response]]
    ) -> web.Response:
        """Act on a session this process holds; one it does not know may be another node's
        (the kernel spreads connections over workers, a front over nodes)."""
        try:
            return await here(request)
        except NotFound:
            if self._cluster is None:
                raise
            forwarded = await self._cluster.forward(request, request.match_info["session"])
            if forwarded is None:
                raise
            return forwarded

    async def _delete_here(self, request: web.Request) -> web.Response:
        runtime, session_id, _ = self._own_session(request, ended=True)
        if not runtime.book.live(session_id):  # its peer connection closed first
            return web.Response(status=200, text="session already ended\n")
        await runtime.end(session_id)
        return web.Response(status=200, text="session ended\n")

    async def _patch_here(self, request: web.Request) -> web.Response:
        """Trickle ICE (RFC 9725 §4.3.1): 204 once the candidates are added. An ICE restart
        (new credentials, or `If-Match: *`) is refused with 422, as the RFC asks of a server
        that trickles but cannot restart (aiortc cannot)."""
        runtime, session_id, ticket = self._own_session(request)
        if_match = request.headers.get("If-Match")
        text = await read_body(request, SDPFRAG_TYPE, MAX_FRAGMENT_BYTES, self._limits.body_seconds)
        fragment = parse_fragment(text)
        session = runtime.session(session_id)
        if if_match == "*" or trickle.is_restart(session.pc, fragment):
            raise UnprocessableContent("ICE restart is not supported: start a new session")
        if if_match is not None and if_match != ticket.etag:
            raise PreconditionFailed(f"If-Match {if_match} is not this session's ICE session")
        if ticket.candidates_ended and fragment.candidates:
            raise BadRequest("candidates after end-of-candidates (RFC 8838 §8.2)")
        await trickle.add(session.pc, fragment)
        ticket.candidates_ended |= fragment.end
        return web.Response(status=204, headers={"ETag": ticket.etag})

    async def options(self, request: web.Request) -> web.Response:
        """A CORS preflight or a client asking for the ICE servers (RFC 9725 §4.6). A
        preflight carries no token, so TURN credentials go only with the 201."""
        response = web.Response(status=204, headers={"Accept-Post": SDP_TYPE})
        for name, value in link_header([IceServer(url) for url in self._ice.servers]):
            response.headers.add(name, value)
        return response

    def routes(self) -> list[web.AbstractRouteDef]:
        session = "/{kind:whip|whep}/{room}/{session}"
        return [
            web.post("/whip/{room}", self.whip_post),
            web.post("/whep/{room}", self.whep_post),
            web.options("/whip/{room}", self.options),
            web.options("/whep/{room}", self.options),
            web.delete(session, self.session_delete),
            web.patch(session, self.session_patch),
            web.options(session, self.options),
        ]
