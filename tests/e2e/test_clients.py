"""WHIP/WHEP clients we did not write, each with its defaults, against a real relay.

The npm libraries in tests/clients/ (`npm ci --prefix tests/clients`) run in headless Chromium
on a page of another origin than the relay, as a school's own page would; Meetecho's
simple-whip-client (Debian package) publishes from GStreamer. Each test checks that media
really flows and that the relay holds no session once the client has stopped. A failure
message carries what the client sent the relay, what it got back, and its console.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
)
from playwright.async_api import Error as PlaywrightError

from tests.conftest import RelayUnderTest, free_port, settled
from tests.e2e.conftest import needs_chromium
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import FrameLog, Playback, Publication, whep_play, whip_publish

T = TypeVar("T", bound=Callable[..., Any])

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
ESBUILD = CLIENTS / "node_modules" / ".bin" / "esbuild"
# page -> (npm package, the global its IIFE bundle defines); whip-whep loads as ES modules
BUNDLES = {
    "eyevinn-whip": ("@eyevinn/whip-web-client", "EyevinnWhip"),
    "eyevinn-player": ("@eyevinn/webrtc-player", "EyevinnPlayer"),
}
MEDOOZE = ["whip-whep", "@binbat/whip-whep"]  # the original and a fork, same defaults

WHIP_CLIENT = "/usr/bin/whip-client"
# the example pipelines of simple-whip-client's README, unchanged
WHIP_CLIENT_AUDIO = (
    "audiotestsrc is-live=true wave=red-noise ! audioconvert ! audioresample ! queue ! "
    "opusenc ! rtpopuspay pt=100 ssrc=1 ! queue ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
)
WHIP_CLIENT_VIDEO = (
    "videotestsrc is-live=true pattern=ball ! videoconvert ! queue ! vp8enc deadline=1 ! "
    "rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"
)
# Debian 12 builds simple-whip-client on libsoup 2.4, but its libnice 0.1.21 links gupnp-igd,
# which loads libsoup 3, and libsoup aborts when both are in one process.
LIBSOUP_CLASH = "Using libsoup2 and libsoup3 in the same process is not supported"
LIBSOUP_CLASH_REASON = (
    "this simple-whip-client build aborts at start: it links libsoup 2.4 while libnice loads "
    "libsoup 3 (via gupnp-igd), and one process cannot hold both"
)

CALL_TIMEOUT = 10.0  # for a page's publish(), play() or stop() to return
MEDIA_TIMEOUT = 10.0  # to the first decoded frames; a failure waits this long
MEASURE_SECONDS = 2.0

needs_node_modules = pytest.mark.skipif(
    not ESBUILD.exists(),
    reason="tests/clients/node_modules is missing: run `npm ci --prefix tests/clients`",
)
needs_whip_client = pytest.mark.skipif(
    shutil.which(WHIP_CLIENT) is None,
    reason="simple-whip-client is not installed: apt-get install simple-whip-client",
)


def in_chromium(test: T) -> T:
    """A test of a browser client: it needs Chromium and the npm packages; 30 s at most."""
    for mark in (needs_chromium, needs_node_modules, pytest.mark.timeout(30)):
        test = mark(test)
    return test


# serving the client pages


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CommonJS packages bundled for a <script> tag, as their READMEs' bundler would."""
    out = tmp_path_factory.mktemp("bundles")
    for page, (package, name) in BUNDLES.items():
        command = [str(ESBUILD), package, "--bundle", "--format=iife", f"--global-name={name}"]
        command += [f"--outfile={out / page}.js", "--log-level=warning"]
        subprocess.run(command, cwd=CLIENTS, check=True)
    return out


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


@pytest.fixture
async def site(bundles: Path) -> AsyncIterator[str]:
    """tests/clients/ over HTTP on a port of its own: another origin than the relay's."""
    app = web.Application()
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_static("/bundles/", bundles)
    app.router.add_static("/", CLIENTS)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# what a client did, for failure messages


class Reporter(Protocol):
    """Something that can tell what a client did."""

    async def report(self) -> str: ...


def sdp_summary(sdp: str) -> str:
    """An SDP body in one line: m-lines in order with their directions, and candidates."""
    lines = sdp.splitlines()
    media = [line.split()[0][2:] for line in lines if line.startswith("m=")]
    directions = [line[2:] for line in lines if line[2:] in ("sendonly", "recvonly", "sendrecv")]
    candidates = sum(line.startswith("a=candidate:") for line in lines)
    ended = "a=end-of-candidates" in lines
    return f"[m={media} {directions} candidates={candidates} end-of-candidates={ended}]"


class Traffic:
    """A client page's requests to the relay, the answers, failures, and its console."""

    def __init__(self, page: Page, relay: str) -> None:
        self.page = page
        self.relay = relay
        self.events: list[str | Response] = []
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.events.append(f"page error: {error}"))

    def _request(self, request: Request) -> None:
        if not request.url.startswith(self.relay):
            return
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "if-match")}
        body = request.post_data or ""
        if request.method == "POST" and body.startswith("v=0"):
            body = sdp_summary(body)
        self.events.append(f"> {request.method} {request.url} {headers} {body[:400]!r}")

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.relay) or response.status >= 400:
            self.events.append(response)

    def _failed(self, request: Request) -> None:
        self.events.append(f"! {request.method} {request.url} failed: {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if "candidate:" not in message.text:  # Eyevinn's debug log prints every candidate
            self.events.append(f"console.{message.type}: {message.text[:300]}")

    async def report(self) -> str:
        """One line per request, response, failure and console message, then the peer."""
        lines = [e if isinstance(e, str) else await self._describe(e) for e in self.events]
        with contextlib.suppress(PlaywrightError):
            lines.append(f"peer: {await self.page.evaluate('sdpShape(window.pc)')}")
        return "\n".join(lines)

    @staticmethod
    async def _describe(response: Response) -> str:
        headers = await response.all_headers()
        line = f"< {response.status} {response.request.method} {response.url}"
        line += f" etag={headers.get('etag')} link={headers.get('link')}"
        with contextlib.suppress(PlaywrightError):  # no body for preflights or a closed page
            body = await response.text()
            line += f" {sdp_summary(body) if body.startswith('v=0') else body.strip()[:300]!r}"
        return line

    async def call(self, script: str, arg: Any = None) -> None:
        """Run one of the page's functions, failing with the report if it throws or hangs."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self.page.evaluate(script, arg)
        except (PlaywrightError, TimeoutError) as error:
            pytest.fail(f"{script} failed: {error!r}\n{await self.report()}")


async def open_client(browser: Browser, site: str, relay: RelayUnderTest, path: str) -> Traffic:
    """A fresh page of `site` at `path`, watched, with its client library loaded."""
    page = await browser.new_page()
    traffic = Traffic(page, relay.base)
    await page.goto(f"{site}/{path}")
    try:
        await page.wait_for_function("window.ready === true", timeout=5000)
    except PlaywrightError:
        pytest.fail(f"{path} did not load its client:\n{await traffic.report()}")
    return traffic


# waiting and measuring


async def until(
    check: Callable[[], Awaitable[bool]], what: str, client: Reporter, timeout: float
) -> None:
    """Poll `check` until it holds; on timeout fail with what the client did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{await client.report()}")
        await asyncio.sleep(0.1)


def sessions(relay: RelayUnderTest, room: str) -> tuple[int, int]:
    """The room's sessions, as (publishers, players)."""
    runtime = relay.registry.find(room)
    return (0, 0) if runtime is None else (len(runtime.publishers), len(runtime.players))


async def relay_is_empty(relay: RelayUnderTest) -> bool:
    """True once no room has a session left (closing connections takes a few loop turns)."""
    return await settled(lambda: not any(r.publishers or r.players for r in relay.registry))


def frames(log: FrameLog) -> int:
    """Every decoded frame of a slot: third-party sources carry no readable counter."""
    return log.unreadable + len(log.records)


async def plays(traffic: Traffic) -> None:
    """The page's <video> advances, its decoder keeps decoding, and sound arrives."""

    async def state() -> dict[str, Any]:
        result: dict[str, Any] = await traffic.page.evaluate("playback(window.video, window.pc)")
        return result

    async def started() -> bool:
        now = await state()
        return bool(now["framesDecoded"] > 0 and now["currentTime"] > 0)

    await until(started, "the <video> to play", traffic, MEDIA_TIMEOUT)
    first = await state()
    await asyncio.sleep(MEASURE_SECONDS)
    last = await state()
    why = f"{first} -> {last}\n{await traffic.report()}"
    assert last["currentTime"] > first["currentTime"] + 0.75 * MEASURE_SECONDS, why
    assert last["totalVideoFrames"] - first["totalVideoFrames"] >= 20, why
    assert last["framesDecoded"] - first["framesDecoded"] >= 20, why
    assert last["audioTracks"] >= 1, why
    assert last["audioSamples"] > first["audioSamples"], why


async def classroom_sees(relay: RelayUnderTest, room: str, client: Reporter) -> Playback:
    """An aiortc classroom that receives >= 25 fps of video, and audio, from the room."""
    classroom = await whep_play(relay.base, room, relay.token(room, "classroom"))
    log = classroom.video[0]

    async def arriving() -> bool:
        return frames(log) >= 20

    try:
        await until(arriving, "frames at an aiortc classroom", client, MEDIA_TIMEOUT)
        start = frames(log)
        await asyncio.sleep(MEASURE_SECONDS)
        fps = (frames(log) - start) / MEASURE_SECONDS
        assert fps >= 25, f"{fps} fps of {log.last_size}\n{await client.report()}"
        await classroom.audio.wait_frames(50)
    except BaseException:
        await classroom.close()
        raise
    return classroom


async def teacher(relay: RelayUnderTest, room: str) -> Publication:
    """An aiortc teacher publishing a 640x360 camera and a tone into `room`."""
    video = CounterVideoTrack(width=640, height=360)
    return await whip_publish(
        relay.base, room, relay.token(room, "teacher"), "camera", video, ToneAudioTrack()
    )


def whip_url(relay: RelayUnderTest, room: str) -> tuple[str, str]:
    return f"{relay.base}/whip/{room}?source=camera", relay.token(room, "teacher")


def whep_url(relay: RelayUnderTest, room: str) -> tuple[str, str]:
    return f"{relay.base}/whep/{room}", relay.token(room, "classroom")


# browser publishers


async def check_publisher(browser: Browser, site: str, relay: RelayUnderTest, path: str) -> None:
    """The page at `path` publishes with its publish(url, token); a classroom sees it."""
    traffic = await open_client(browser, site, relay, path)
    try:
        await traffic.call("([u, t]) => publish(u, t)", whip_url(relay, "lesson"))

        async def published() -> bool:
            return sessions(relay, "lesson")[0] == 1

        await until(published, "a WHIP session at the relay", traffic, MEDIA_TIMEOUT)
        classroom = await classroom_sees(relay, "lesson", traffic)
        try:
            await traffic.call("stop()")
            ended = await settled(lambda: sessions(relay, "lesson")[0] == 0)
            assert ended, await traffic.report()
        finally:
            await classroom.close()
        assert await relay_is_empty(relay)
    finally:
        await traffic.page.close()


@in_chromium
@pytest.mark.parametrize("package", MEDOOZE)
async def test_whip_whep_publishes_a_camera(
    relay: RelayUnderTest, browser: Browser, site: str, package: str
) -> None:
    await check_publisher(browser, site, relay, f"medooze.html?package={package}")


@in_chromium
async def test_eyevinn_whip_web_client_publishes_a_camera(
    relay: RelayUnderTest, browser: Browser, site: str
) -> None:
    await check_publisher(browser, site, relay, "eyevinn-whip.html")


# browser players


async def check_player(browser: Browser, site: str, relay: RelayUnderTest, path: str) -> None:
    """The page at `path` plays an aiortc teacher's lesson with its play(url, token)."""
    publication = await teacher(relay, "lesson")
    try:
        traffic = await open_client(browser, site, relay, path)
        try:
            await traffic.call("([u, t]) => play(u, t)", whep_url(relay, "lesson"))
            await plays(traffic)
            await traffic.call("stop()")
            ended = await settled(lambda: sessions(relay, "lesson")[1] == 0)
            assert ended, await traffic.report()
        finally:
            await traffic.page.close()
    finally:
        await publication.close()
    assert await relay_is_empty(relay)


@in_chromium
@pytest.mark.parametrize("package", MEDOOZE)
async def test_whip_whep_plays_a_lesson(
    relay: RelayUnderTest, browser: Browser, site: str, package: str
) -> None:
    await check_player(browser, site, relay, f"medooze.html?package={package}")


@in_chromium
async def test_eyevinn_webrtc_player_plays_a_lesson(
    relay: RelayUnderTest, browser: Browser, site: str
) -> None:
    await check_player(browser, site, relay, "eyevinn-player.html")


@in_chromium
async def test_a_trickling_player_with_video_first_plays_a_lesson(
    relay: RelayUnderTest, browser: Browser, site: str
) -> None:
    await check_player(browser, site, relay, "trickle-player.html")


# GStreamer


class ProcessOutput:
    """A client process's output, read once it has stopped (SIGINT, as its README says)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.text: str | None = None

    async def report(self) -> str:
        if self.text is None:
            if self.process.returncode is None:
                self.process.send_signal(signal.SIGINT)
            assert self.process.stdout is not None
            try:
                async with asyncio.timeout(3):
                    self.text = (await self.process.stdout.read()).decode(errors="replace")
            except TimeoutError:
                self.text = "(no output within 3 s)"
        return self.text[-4000:]


@needs_whip_client
@pytest.mark.timeout(30)
async def test_simple_whip_client_publishes_gstreamer_test_media(relay: RelayUnderTest) -> None:
    url, token = whip_url(relay, "lesson")
    audio, video = WHIP_CLIENT_AUDIO, WHIP_CLIENT_VIDEO
    process = await asyncio.create_subprocess_exec(
        WHIP_CLIENT, "-u", url, "-t", token, "-A", audio, "-V", video, "-o",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = ProcessOutput(process)
    try:

        async def published_or_ended() -> bool:
            return sessions(relay, "lesson")[0] == 1 or process.returncode is not None

        await until(published_or_ended, "a WHIP session at the relay", output, MEDIA_TIMEOUT)
        if process.returncode is not None:
            text = await output.report()
            if LIBSOUP_CLASH in text:
                pytest.skip(LIBSOUP_CLASH_REASON)
            pytest.fail(f"whip-client exited with {process.returncode}:\n{text}")
        classroom = await classroom_sees(relay, "lesson", output)
        try:
            process.send_signal(signal.SIGINT)  # it DELETEs its session, then exits
            async with asyncio.timeout(5):
                await process.wait()
            ended = await settled(lambda: sessions(relay, "lesson")[0] == 0)
            assert ended, await output.report()
        finally:
            await classroom.close()
        assert await relay_is_empty(relay)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
