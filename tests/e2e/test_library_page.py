"""The library page in real Chromium: find a lesson, play it, seek; admins may delete."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, ViewportSize

from tests.conftest import RelayUnderTest
from tests.e2e.conftest import needs_chromium, until_true
from tests.recorder.lessons import add_lesson

pytestmark = needs_chromium
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"


async def test_a_school_finds_plays_and_seeks_a_recorded_lesson(
    relay: RelayUnderTest, browser: Browser, tmp_path: Path
) -> None:
    catalog = relay.catalog
    add_lesson(catalog, tmp_path, "l1", title="认识五线谱", subject="音乐", grade="五年级")
    add_lesson(catalog, tmp_path, "l2", title="Fractions", subject="math")
    page = await browser.new_page(viewport=ViewportSize(width=1280, height=800))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{relay.base}/library?token={relay.token('village', 'classroom')}")
    await page.wait_for_selector(".lesson-card[data-id=l2]")
    assert await page.locator(".lesson-card button.danger").count() == 0  # no delete for schools
    await page.fill("#q", "音乐")
    await page.click("#search button[type=submit]")
    await until_true(page, "document.querySelectorAll('.lesson-card').length === 1")
    await page.click(".lesson-card[data-id=l1] button.primary")
    await until_true(page, "document.querySelector('#lesson-main').currentTime > 0.5")
    await page.eval_on_selector("#lesson-main", "v => { v.pause(); v.currentTime = 3.2; }")
    await until_true(
        page,
        "(() => { const v = document.querySelector('#lesson-main');"
        " return !v.seeking && v.readyState >= 2 && Math.abs(v.currentTime - 3.2) < 0.1; })()",
    )
    duration = await page.eval_on_selector("#lesson-main", "v => v.duration")
    assert 3.9 < duration < 4.2
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "library.png"), full_page=True)
    assert errors == []
    await page.close()


async def test_an_admin_deletes_a_lesson_from_the_page(
    relay: RelayUnderTest, browser: Browser, tmp_path: Path
) -> None:
    add_lesson(relay.catalog, tmp_path, "l1", title="Old lesson")
    page = await browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(f"{relay.base}/library?token={relay.token('*', 'admin')}")
    await page.click(".lesson-card[data-id=l1] button.danger")
    await page.wait_for_selector("#no-lessons:not(.hidden)")
    assert "l1" not in relay.catalog.lessons
    await page.close()
