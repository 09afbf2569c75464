"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) handlers.

Each handler checks in the order that leaves nothing behind on failure: token, room and
source, content type and size, SDP shape; only then is a peer connection created, and the
runtime closes it again if negotiation fails.
"""

from __future__ import annotations

from aiohttp import web

from relay.config import MediaConfig
from relay.context import CTX, Context
from relay.core.ladder import LadderError, check_cap, parse_ladder
from relay.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from relay.rtc.sdp import check_offer
from relay.tokens import Grant, validate_room, verify

SDP_TYPE = "application/sdp"


def bearer(request: web.Request) -> str:
    """The token from `Authorization: Bearer …`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing token: send Authorization: Bearer <token>")
    return token.strip()


def authorize(request: web.Request, room: str, roles: set[str]) -> Grant:
    """Verify the bearer token for this room and one of these roles."""
    ctx: Context = request.app[CTX]
    return verify(ctx.secret, bearer(request), room, roles)


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


async def whip_post(request: web.Request) -> web.Response:
    """A teacher starts publishing one source."""
    ctx: Context = request.app[CTX]
    room = validate_room(request.match_info["room"])
    grant = authorize(request, room, {"teacher"})
    source = request.query.get("source", "camera")
    if source not in ("camera", "screen"):
        raise BadRequest(f"unknown source {source!r}: use camera or screen")
    offer = await read_sdp(request, ctx.media.max_sdp_bytes)
    shape = check_offer(offer, sending=True)
    runtime = ctx.registry.get(room)
    try:
        session_id, answer = await runtime.publish(source, grant.name, offer, shape)
    finally:
        ctx.registry.release(room)
    return sdp_created(f"/whip/{room}/{session_id}", answer)


async def whep_post(request: web.Request) -> web.Response:
    """A classroom starts playing the room; allowed before the teacher starts."""
    ctx: Context = request.app[CTX]
    room = validate_room(request.match_info["room"])
    grant = authorize(request, room, {"classroom", "node"})
    cap = quality_cap(request, ctx.media)
    offer = await read_sdp(request, ctx.media.max_sdp_bytes)
    shape = check_offer(offer, sending=False)
    runtime = ctx.registry.get(room)
    try:
        session_id, answer = await runtime.play(grant.name, offer, shape, cap)
    finally:
        ctx.registry.release(room)
    return sdp_created(f"/whep/{room}/{session_id}", answer)


def quality_cap(request: web.Request, media: MediaConfig) -> str | None:
    """The best layer a classroom asked for (`?quality=180p`, `low`, `audio`), checked."""
    try:
        return check_cap(request.query.get("quality"), parse_ladder(media.ladder, media.still_fps))
    except LadderError as error:
        raise BadRequest(str(error)) from None


async def session_delete(request: web.Request) -> web.Response:
    """End a WHIP or WHEP session by its Location URL."""
    ctx: Context = request.app[CTX]
    kind = request.match_info["kind"]
    room = validate_room(request.match_info["room"])
    authorize(request, room, {"teacher"} if kind == "whip" else {"classroom", "node"})
    session_id = request.match_info["session"]
    runtime = ctx.registry.find(room)
    if runtime is None or not runtime.owns(session_id, kind):
        raise NotFound(f"no {kind} session {session_id!r} in room {room!r}")
    await runtime.end(session_id)
    return web.Response(status=200, text="session ended\n")


async def session_patch(request: web.Request) -> web.Response:
    """Trickle ICE and ICE restart are not supported (RFC 9725 §4.3.1 allows 405)."""
    raise web.HTTPMethodNotAllowed(
        "PATCH", ["DELETE", "OPTIONS"], text="trickle ICE is not supported\n"
    )


def add_routes(app: web.Application) -> None:
    """Register the WHIP/WHEP routes."""
    app.router.add_post("/whip/{room}", whip_post)
    app.router.add_post("/whep/{room}", whep_post)
    app.router.add_delete("/{kind:whip|whep}/{room}/{session}", session_delete)
    app.router.add_patch("/{kind:whip|whep}/{room}/{session}", session_patch)
