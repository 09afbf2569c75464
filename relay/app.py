"""Application assembly: routes, middleware, lifecycle, and `serve` for `ketang serve`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from monitoring import metrics
from monitoring.quality import SAMPLE_SECONDS
from recorder.library import Catalog, LocalStore
from recorder.recorder import Recorder
from relay.auth import Auth
from relay.cluster.directory import Directory, NodeInfo, connect
from relay.cluster.node import ClusterNode, new_node_id
from relay.config import Config
from relay.core.errors import Unauthorized
from relay.events import EventHub, EventsApi
from relay.library_api import LibraryApi
from relay.middleware import cors_middleware, errors_middleware, same_origin
from relay.pages import Pages
from relay.registry import Registry
from relay.rtc import hooks, rtpsend
from relay.rtc.udpmux import UdpMux
from relay.runtime import Clock, EventListener, RoomServices
from relay.sessions import EndedSessions
from relay.signalling import Signalling
from relay.tls import server_ssl_context
from relay.tokens import load_secret

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Relay:
    """What one relay process is made of, built once by `build_app`."""

    config: Config
    registry: Registry
    hub: EventHub
    catalog: Catalog
    recorder: Recorder
    clock: Clock
    mux: UdpMux | None
    cluster: ClusterNode | None  # with --redis-url: this process as a node of a cluster

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness, with a summary an operator can read at a glance."""
        rooms = self.registry.snapshots(self.clock())
        return web.json_response(
            {
                "status": "ok",
                "rooms": len(rooms),
                "lessons_live": sum(1 for r in rooms if r.live),
                "classrooms": sum(len(r.classrooms) for r in rooms),
                "media_udp_port": self.mux.port if self.mux is not None else None,
                # the batch send path in use (relay/rtc/rtpsend.py): "native" unless the
                # extension was not built where this was installed
                "send_path": "native" if rtpsend.NATIVE is not None else "python",
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition, behind a bearer token when one is configured."""
        expected = self.config.metrics.bearer_token
        if expected is not None and request.headers.get("Authorization") != f"Bearer {expected}":
            raise Unauthorized("metrics need the configured bearer token")
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")


RELAY = web.AppKey("ketang", Relay)
# Seconds between two sweeps of sessions that expired: a vanished classroom leaves within
# silence_seconds plus this.
SWEEP_SECONDS = 1.0


async def _probe_loop_lag(interval: float = 0.5) -> None:
    """How late timers fire: a blocked event loop delays every classroom's media."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        metrics.set_loop_lag(max(loop.time() - before - interval, 0.0))


async def _every(interval: float, work: Callable[[float], None], clock: Clock) -> None:
    """Run `work(now)` every `interval` seconds; a bug in it is logged, and the next run
    comes all the same (the lesson must not stop for it)."""
    while True:
        await asyncio.sleep(interval)
        try:
            work(clock())
        except Exception:
            logger.exception("periodic %s failed", getattr(work, "__name__", work))


def build_app(config: Config, secret: bytes) -> web.Application:
    """The relay's aiohttp application, every part of it and every route built here; call
    it with the event loop running (its clock is the loop's)."""
    hooks.check_aiortc()
    hooks.defer_bitrate_estimators()
    clock = asyncio.get_running_loop().time
    data_dir = config.storage.data_dir
    catalog = Catalog(LocalStore(data_dir / "library"))
    recorder = Recorder(data_dir, catalog)
    listeners: list[EventListener] = []
    mux = UdpMux(config.ice.udp_port) if config.ice.udp_mux else None
    services = RoomServices(
        config.media,
        config.recording,
        config.limits,
        config.ice,
        recorder,
        EndedSessions(),
        listeners,
        clock,
        time.time,
        mux.host_protocols if mux is not None else None,
    )
    registry = Registry(services)
    hub = EventHub(registry, config.limits, clock, time.time)
    listeners.append(hub.on_event)
    cluster = _cluster_node(config, registry, secret)
    if cluster is not None:
        listeners.append(cluster.on_event)
        cluster.local_state = hub.local_state  # what this node tells the others
        hub.remote = cluster  # and what the pages here learn of theirs
    relay = Relay(config, registry, hub, catalog, recorder, clock, mux, cluster)
    auth = Auth(secret)
    pages = Pages(config, auth, secret, hub)
    guard = same_origin(config.server.public_url)
    app = web.Application(middlewares=[cors_middleware, guard, errors_middleware])
    app[RELAY] = relay
    app.router.add_routes([web.get("/healthz", relay.healthz), web.get("/metrics", relay.metrics)])
    signalling = Signalling(registry, config.media, config.ice, config.limits, auth, cluster)
    app.router.add_routes(signalling.routes())
    app.router.add_routes(EventsApi(hub, auth).routes())
    app.router.add_routes(pages.routes())
    app.router.add_routes(LibraryApi(catalog, auth, pages).routes())
    app.cleanup_ctx.append(_lifecycle)
    return app


def node_url(config: Config) -> str:
    """Where other nodes reach this one: the configured URL, else this host and port."""
    if config.cluster.node_url is not None:
        return config.cluster.node_url.rstrip("/")
    if config.cluster.node_port is not None:
        return f"http://127.0.0.1:{config.cluster.node_port}"
    server = config.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    scheme = "https" if server.tls_cert is not None or server.self_signed else "http"
    return f"{scheme}://{host}:{server.port}"


def _cluster_node(config: Config, registry: Registry, secret: bytes) -> ClusterNode | None:
    """This process's part of the cluster, when a Redis URL makes it a node of one."""
    if config.storage.redis_url is None:
        return None
    directory = Directory(connect(config.storage.redis_url))
    public = config.cluster.public_node_url
    info = NodeInfo(new_node_id(), node_url(config), 0.0, 0, public.rstrip("/") if public else None)
    node = ClusterNode(directory, info, registry, secret)
    node.placement_gap = config.cluster.placement_gap
    return node


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Install the live collector and the periodic tasks; on shutdown close every session
    and lesson, then wait for the library to have them."""
    relay = app[RELAY]
    if relay.mux is not None:
        await relay.mux.open()  # before any session: a port in use stops the start here
    collector = metrics.install_live_collector(lambda: relay.registry.snapshots(relay.clock()))
    tasks = [
        asyncio.ensure_future(relay.hub.tick()),
        asyncio.ensure_future(_probe_loop_lag()),
        # every live lesson's classrooms, for its quality history
        asyncio.ensure_future(_every(SAMPLE_SECONDS, relay.registry.sample_quality, relay.clock)),
        # sessions that never connected in time, and peers that went silent
        asyncio.ensure_future(_every(SWEEP_SECONDS, relay.registry.sweep, relay.clock)),
    ]
    if relay.cluster is not None:
        port = relay.mux.port if relay.mux is not None else 0
        relay.cluster.info = dataclasses.replace(relay.cluster.info, media_port=port)
        tasks.append(asyncio.ensure_future(relay.cluster.run()))
        tasks.append(asyncio.ensure_future(relay.cluster.listen()))
    recovery = asyncio.ensure_future(relay.recorder.recover())  # lessons a crash left
    yield
    for task in tasks:
        task.cancel()
    if relay.cluster is not None:
        await relay.cluster.leave()
    metrics.uninstall(collector)
    await relay.registry.close()
    if relay.mux is not None:
        relay.mux.close()
    await recovery
    await relay.recorder.close()


def make_runner(app: web.Application, config: Config) -> web.AppRunner:
    """The HTTP server: a connection idle, or still sending its headers, for idle_seconds is
    closed (aiohttp's default keeps one an hour, so slow clients could hold sockets)."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=config.limits.idle_seconds)


async def serve(config: Config) -> None:
    """Run the relay until SIGINT or SIGTERM."""
    secret = load_secret(config.auth, config.storage.data_dir)
    app = build_app(config, secret)
    runner = make_runner(app, config)
    await runner.setup()
    context: ssl.SSLContext | None = server_ssl_context(config)
    server = config.server
    site = web.TCPSite(
        runner, server.host, server.port, ssl_context=context, reuse_port=server.reuse_port
    )
    await site.start()
    logger.info("relay listening on %s", json.dumps(site.name))
    if config.cluster.node_port is not None:  # this worker's own address for other nodes
        node_site = web.TCPSite(runner, "127.0.0.1", config.cluster.node_port)
        await node_site.start()
        logger.info("node address %s", json.dumps(node_site.name))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
