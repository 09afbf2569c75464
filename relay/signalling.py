"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) handlers.

Each handler checks in the order that leaves nothing behind on failure: token, room and
source, content type and size, SDP shape; only then is a peer connection created, and the
runtime closes it again if negotiation fails.
"""

from __future__ import annotations

from aiohttp import web

from relay.auth import Auth
from relay.config import MediaConfig
from relay.core.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from relay.core.ladder import LadderError, check_cap
from relay.registry import Registry
from relay.rtc.sdp import check_offer
from relay.tokens import validate_room

SDP_TYPE = "application/sdp"


async def read_sdp(request: web.Request, limit: int) -> str:
    """The request body as SDP text: 415 for another type, 413 over `limit` bytes."""
    if request.content_type != SDP_TYPE:
        raise UnsupportedMediaType(f"Content-Type must be {SDP_TYPE}, not {request.content_type!r}")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"SDP body over {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"SDP body over {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("SDP body is not UTF-8") from None


def sdp_created(location: str, answer: str) -> web.Response:
    """201 with the resource URL and the SDP answer."""
    return web.Response(
        status=201, text=answer, content_type=SDP_TYPE, headers={"Location": location}
    )


class Signalling:
    """The WHIP and WHEP endpoints of one relay process."""

    def __init__(self, registry: Registry, media: MediaConfig, auth: Auth) -> None:
        self._registry = registry
        self._media = media
        self._auth = auth

    async def whip_post(self, request: web.Request) -> web.Response:
        """A teacher starts publishing one source."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, {"teacher"}, query=False)
        source = request.query.get("source", "camera")
        if source not in ("camera", "screen"):
            raise BadRequest(f"unknown source {source!r}: use camera or screen")
        offer = await read_sdp(request, self._media.max_sdp_bytes)
        shape = check_offer(offer, sending=True)
        runtime = self._registry.get(room)
        try:
            session_id, answer = await runtime.publish(source, grant.name, offer, shape)
        finally:
            self._registry.release(room)
        return sdp_created(f"/whip/{room}/{session_id}", answer)

    async def whep_post(self, request: web.Request) -> web.Response:
        """A classroom starts playing the room; allowed before the teacher starts."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, {"classroom", "node"}, query=False)
        cap = self._quality_cap(request)
        offer = await read_sdp(request, self._media.max_sdp_bytes)
        shape = check_offer(offer, sending=False)
        runtime = self._registry.get(room)
        try:
            session_id, answer = await runtime.play(grant.name, offer, shape, cap)
        finally:
            self._registry.release(room)
        return sdp_created(f"/whep/{room}/{session_id}", answer)

    def _quality_cap(self, request: web.Request) -> str | None:
        """The best layer a classroom asked for (`?quality=180p`, `low`, `audio`), checked."""
        try:
            return check_cap(request.query.get("quality"), self._media.renditions)
        except LadderError as error:
            raise BadRequest(str(error)) from None

    async def session_delete(self, request: web.Request) -> web.Response:
        """End a WHIP or WHEP session by its Location URL."""
        kind = request.match_info["kind"]
        room = validate_room(request.match_info["room"])
        roles = {"teacher"} if kind == "whip" else {"classroom", "node"}
        self._auth.room(request, room, roles, query=False)
        session_id = request.match_info["session"]
        runtime = self._registry.find(room)
        if runtime is None or not runtime.owns(session_id, kind):
            raise NotFound(f"no {kind} session {session_id!r} in room {room!r}")
        await runtime.end(session_id)
        return web.Response(status=200, text="session ended\n")

    async def session_patch(self, request: web.Request) -> web.Response:
        """Trickle ICE and ICE restart are not supported (RFC 9725 §4.3.1 allows 405)."""
        raise web.HTTPMethodNotAllowed(
            "PATCH", ["DELETE", "OPTIONS"], text="trickle ICE is not supported\n"
        )

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/whip/{room}", self.whip_post),
            web.post("/whep/{room}", self.whep_post),
            web.delete("/{kind:whip|whep}/{room}/{session}", self.session_delete),
            web.patch("/{kind:whip|whep}/{room}/{session}", self.session_patch),
        ]
