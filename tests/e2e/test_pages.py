"""The pages as people use them, in real headless Chromium with fake camera, mic and screen.

Screenshots of every page go to test-artifacts/pages/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, ViewportSize

from tests.conftest import RelayUnderTest
from tests.e2e.conftest import needs_chromium, until_true

pytestmark = needs_chromium

ROOM = "grade5-music"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"
VIEWPORT = ViewportSize(width=1280, height=720)


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20) -> Any:
    """The first truthy result of `check()`, polled; fails naming `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.2)


class Pages:
    """Open pages of one test, each failing the test on a script error."""

    def __init__(self, browser: Browser, relay: RelayUnderTest) -> None:
        self.browser = browser
        self.relay = relay
        self.errors: list[str] = []
        self.opened: list[Page] = []

    async def open(self, path: str, role: str, name: str = "", room: str = ROOM) -> Page:
        context = await self.browser.new_context(viewport=VIEWPORT, locale="zh-CN")
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{path}: {error}"))
        token = self.relay.token(room if role != "admin" else "*", role, name)
        await page.goto(f"{self.relay.base}{path}?token={token}")
        self.opened.append(page)
        return page

    async def close(self) -> None:
        for page in self.opened:
            await page.context.close()


@pytest.fixture
async def pages(browser: Browser, relay: RelayUnderTest) -> AsyncIterator[Pages]:
    opened = Pages(browser, relay)
    try:
        yield opened
    finally:
        await opened.close()
    assert opened.errors == []


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def frames_decoded(page: Page) -> int:
    """Video frames the classroom page's current connection decoded (getStats)."""
    result: int = await page.evaluate(
        """async () => {
            const playback = window.ketangPlayer.playback;
            if (!playback) return 0;
            let frames = 0;
            (await playback.pc.getStats()).forEach((s) => {
                if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
            });
            return frames;
        }"""
    )
    return result


async def plays(page: Page, video: str = "#main") -> None:
    """The classroom's main video advances and its decoder keeps decoding."""
    start = await page.eval_on_selector(video, "v => v.currentTime")
    before = await frames_decoded(page)

    async def advanced() -> bool:
        now = await page.eval_on_selector(video, "v => v.currentTime")
        return now > start + 1.0 and await frames_decoded(page) > before + 20

    await eventually(advanced, f"{video} to play")


async def start_classroom(pages: Pages, name: str) -> Page:
    page = await pages.open(f"/class/{ROOM}", "classroom", name)
    await page.click("#start")
    return page


@pytest.mark.timeout(180)
async def test_a_lesson_from_the_teacher_page_to_two_classroom_pages(
    pages: Pages, relay: RelayUnderTest
) -> None:
    # a classroom opened before the lesson waits, readably
    early = await start_classroom(pages, "Hope Primary")
    await early.wait_for_selector("#waiting-screen:not(.hidden)")
    assert "等待老师开始上课" in await early.inner_text("#waiting-screen")
    await shot(early, "classroom-waiting")

    teacher = await pages.open(f"/teach/{ROOM}", "teacher", "Ms Wang")
    await teacher.fill("#title", "认识五线谱")
    await teacher.fill("#subject", "音乐")
    await teacher.fill("#grade", "五年级")
    await until_true(teacher, "document.querySelector('#preview').currentTime > 0.5")
    await teacher.click("#start")
    await teacher.wait_for_selector("#status[data-state=live]")

    late = await start_classroom(pages, "Sunrise School")
    for page in (early, late):
        await page.wait_for_selector("#waiting-screen.hidden", state="attached")
        await plays(page)
    assert "认识五线谱" in await early.inner_text("#start-lesson")

    # the teacher sees both classrooms
    await until_true(teacher, "document.querySelectorAll('#classrooms li').length === 2")
    names = await teacher.inner_text("#classrooms")
    assert "Hope Primary" in names and "Sunrise School" in names
    await shot(teacher, "teacher-live")
    await shot(late, "classroom-camera")

    # a screen share goes large on the classrooms, the teacher in the corner; then stops
    await teacher.click("#share")
    for page in (early, late):
        await page.wait_for_selector("body[data-layout=screen]")
        await page.wait_for_selector("#pip:not(.hidden)")
        await plays(page)
    assert await late.eval_on_selector("#main", "v => v.videoWidth") == 1280
    await shot(late, "classroom-screen-share")
    await shot(teacher, "teacher-sharing")
    await teacher.click("#share")
    for page in (early, late):
        await page.wait_for_selector("body[data-layout=camera]")
        await page.wait_for_selector("#pip.hidden", state="attached")
        await plays(page)

    # the classrooms reported their quality of experience to the relay
    runtime = relay.registry.find(ROOM)
    assert runtime is not None

    async def reported() -> bool:
        classrooms = runtime.snapshot(0.0).classrooms
        return len(classrooms) == 2 and all(
            c.qoe.get("framesPerSecond", 0) > 10 for c in classrooms
        )

    await eventually(reported, "QoE reports from both classrooms", timeout=15)

    # a classroom whose connection is cut comes back on its own
    session = await early.evaluate("window.ketangPlayer.playback.id")
    await runtime.end(session)
    await early.wait_for_selector("#connection:not(.hidden)")
    await shot(early, "classroom-reconnecting")

    async def rejoined() -> bool:
        current = await early.evaluate("window.ketangPlayer.playback?.id")
        return bool(current) and current != session

    await eventually(rejoined, "the classroom to reconnect")
    await plays(early)
    await early.wait_for_selector("#connection.hidden", state="attached")

    # the teacher's connection drops: the page publishes again, the classrooms stay joined
    classrooms = set(runtime.players)
    publisher = runtime.model.publishers["camera"].session
    await runtime.end(publisher)

    async def republished() -> bool:
        camera = runtime.model.publishers.get("camera")
        return camera is not None and camera.session != publisher

    await eventually(republished, "the teacher page to publish again")
    await teacher.wait_for_selector("#status[data-state=live]")
    for page in (early, late):
        await plays(page)
    assert set(runtime.players) == classrooms

    # the admin sees the room, its teacher and both classrooms
    admin = await pages.open("/admin", "admin", "county")
    await admin.wait_for_selector(f".room-card[data-room={ROOM}] tr:nth-child(3)")
    overview = await admin.inner_text(f".room-card[data-room={ROOM}]")
    assert "Ms Wang" in overview and "Hope Primary" in overview and "Sunrise School" in overview
    await shot(admin, "admin-overview")

    # the lesson ends: classrooms say so instead of showing a frozen picture
    await teacher.click("#stop")
    for page in (early, late):
        await page.wait_for_selector("#waiting-screen:not(.hidden)")
    assert "本节课已结束" in await late.inner_text("#waiting-screen")
    await shot(late, "classroom-ended")


@pytest.mark.timeout(60)
async def test_the_admin_form_makes_links_that_open_the_pages(pages: Pages) -> None:
    admin = await pages.open("/admin", "admin", "county")
    await admin.fill("#room", "science-3")
    await admin.fill("#teacher-name", "Mr Li")
    await admin.fill("#classroom-names", "Village A\nVillage B")
    await admin.click("button[type=submit]")
    await admin.wait_for_selector("#links li:nth-child(3)")
    urls = await admin.eval_on_selector_all("#links a", "links => links.map(a => a.href)")
    assert [u.split("?")[0].rsplit("/", 2)[-2:] for u in urls] == [
        ["teach", "science-3"], ["class", "science-3"], ["class", "science-3"]
    ]  # fmt: skip
    await shot(admin, "admin-links")
    classroom = await admin.context.new_page()
    await classroom.goto(urls[2])
    assert "Village B" in await classroom.inner_text("#start-name")


@pytest.mark.timeout(60)
async def test_the_landing_page_explains_in_both_languages(pages: Pages) -> None:
    page = await pages.open("/", "classroom")
    assert "城乡同步课堂" in await page.inner_text(".hero")
    await shot(page, "landing-zh")
    await page.click("#lang")
    assert "rural classrooms follow" in await page.inner_text(".hero")
    await shot(page, "landing-en")


@pytest.mark.parametrize(
    ("path", "role", "room", "status", "words"),
    [
        ("/class/grade5-music", None, ROOM, 401, "This link is not valid or has expired"),
        ("/teach/grade5-music", "classroom", ROOM, 403, "This link does not open this page"),
        ("/class/grade5-music", "classroom", "other-room", 403, "此链接不能打开这个页面"),
        ("/admin", "teacher", ROOM, 403, "This link does not open this page"),
        ("/class/bad%20room!", "classroom", ROOM, 400, "This link is malformed"),
    ],
)
async def test_a_bad_link_gives_a_clear_page(
    relay: RelayUnderTest, path: str, role: str | None, room: str, status: int, words: str
) -> None:
    token = relay.token(room, role) if role else "not-a-token"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{relay.base}{path}?token={token}") as reply,
    ):
        body = await reply.text()
    assert reply.status == status
    assert reply.content_type == "text/html"
    assert words in body and "Traceback" not in body


@pytest.mark.timeout(60)
async def test_a_bad_link_page_looks_like_the_product(
    browser: Browser, relay: RelayUnderTest
) -> None:
    page = await browser.new_page(viewport=VIEWPORT)
    await page.goto(f"{relay.base}/class/{ROOM}?token=expired.or.wrong")
    assert "链接无效或已过期" in await page.inner_text("h1")
    await shot(page, "error-bad-link")
    await page.close()
