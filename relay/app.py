"""Application assembly: routes, middleware, lifecycle, and `serve` for `ketang serve`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web

from monitoring import metrics
from relay import events, library_api, pages, signalling
from relay.config import Config
from relay.context import CTX, Context
from relay.errors import KetangError, Unauthorized, status_of
from relay.registry import Registry
from relay.rtc.hooks import check_aiortc
from relay.runtime import RoomRuntime
from relay.tls import server_ssl_context
from relay.tokens import load_secret

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS = {
    # WHIP/WHEP clients run in pages of other origins (RFC 9725 §4.8 expects CORS support).
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location, Link",
}


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    """The one place an error becomes a response: JSON under /api, else one line of text."""
    metrics.count_http_error(status)
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=status)
    return web.Response(status=status, text=message + "\n")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the error tree onto HTTP; unexpected errors are logged and answered 500."""
    try:
        return await handler(request)
    except KetangError as exc:
        if exc.status >= 500:
            logger.error("internal error on %s %s: %s", request.method, request.path, exc)
        return error_response(request, *status_of(exc))
    except web.HTTPException:
        raise
    except Exception as exc:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, *status_of(exc))


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and add CORS headers to every response."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(CORS_HEADERS)
            raise
    response.headers.update(CORS_HEADERS)
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness, with a summary an operator can read at a glance."""
    ctx = request.app[CTX]
    rooms = list(ctx.registry)
    return web.json_response(
        {
            "status": "ok",
            "rooms": len(rooms),
            "lessons_live": sum(1 for r in rooms if r.model.live),
            "classrooms": sum(len(r.players) for r in rooms),
        }
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus exposition, behind a bearer token when one is configured."""
    expected = request.app[CTX].config.metrics.bearer_token
    if expected is not None and request.headers.get("Authorization") != f"Bearer {expected}":
        raise Unauthorized("metrics need the configured bearer token")
    return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")


def room_samples(registry: Registry, hub: events.EventHub) -> Iterator[metrics.RoomSample]:
    """Live room state for the scrape-time collector."""
    now = asyncio.get_running_loop().time()
    for room in registry:
        sources = tuple(
            metrics.SourceSample(p.source, room.source_bitrate(p.source))
            for p in room.model.publishers.values()
        )
        pages = hub.rooms.get(room.name)
        yield metrics.RoomSample(
            room.name,
            room.model.live,
            len(room.publishers),
            len(room.players),
            tuple(_classrooms(room, now)),
            sources,
            pages.uplink if pages else {},
        )


def _classrooms(room: RoomRuntime, now: float) -> Iterator[metrics.ClassroomSample]:
    seen: set[str] = set()
    for session_id, player in room.players.items():
        rate = player.rate
        if rate is None:
            continue
        # two connections with one name (a reloaded page) must not share a label set
        name = player.name if player.name not in seen else f"{player.name} ({session_id[:6]})"
        seen.add(name)
        link = rate.view(now)
        yield metrics.ClassroomSample(
            classroom=name,
            layers=link.layers,
            estimate=link.estimate,
            sent=link.sent,
            rtt=link.rtt,
            loss=link.loss,
            jitter=rate.jitter,
            nacks=rate.nacks,
            plis=sum(t.plis for t in player.tracks.values()),
            qoe=player.qoe,
        )


async def _probe_loop_lag(interval: float = 0.5) -> None:
    """How late timers fire: a blocked event loop delays every classroom's media."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        metrics.set_loop_lag(max(loop.time() - before - interval, 0.0))


def build_app(config: Config, secret: bytes) -> web.Application:
    """The relay's aiohttp application; sessions end when it shuts down."""
    check_aiortc()
    app = web.Application(middlewares=[cors_middleware, errors_middleware])
    registry = Registry(config.media)
    app[CTX] = Context(config, secret, registry)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    signalling.add_routes(app)
    events.add_routes(app)
    pages.add_routes(app)
    library_api.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Install the live collector; on shutdown close every session."""
    ctx = app[CTX]
    hub = app[events.HUB]
    collector = metrics.install_live_collector(lambda: room_samples(ctx.registry, hub))
    ticker = asyncio.ensure_future(hub.tick())
    lag = asyncio.ensure_future(_probe_loop_lag())
    recorder = app[library_api.RECORDER]
    recovery = asyncio.ensure_future(recorder.recover())  # lessons a crash left unpublished
    sampler = asyncio.ensure_future(recorder.run_sampler())
    yield
    ticker.cancel()
    lag.cancel()
    sampler.cancel()
    metrics.uninstall(collector)
    await ctx.registry.close()
    await recovery
    await recorder.close()


async def serve(config: Config) -> None:
    """Run the relay until SIGINT or SIGTERM."""
    secret = load_secret(config.auth, config.storage.data_dir)
    app = build_app(config, secret)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context: ssl.SSLContext | None = server_ssl_context(config)
    site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=context)
    await site.start()
    logger.info("relay listening on %s", json.dumps(site.name))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
