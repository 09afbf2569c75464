"""The library over HTTP: listing, Range, download, delete, and bad input refused."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RelayUnderTest
from tests.recorder.lessons import add_lesson


@pytest.fixture
async def lesson(relay: RelayUnderTest, tmp_path: Path) -> str:
    add_lesson(relay.catalog, tmp_path, "lesson-1", title="Fractions")
    return "lesson-1"


async def get(
    relay: RelayUnderTest, path: str, token: str | None, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(relay.base + path, headers=headers) as reply,
    ):
        return reply.status, await reply.read(), dict(reply.headers)


async def test_any_school_lists_and_plays_lessons(relay: RelayUnderTest, lesson: str) -> None:
    token = relay.token("another-room", "classroom")
    status, body, _ = await get(relay, "/api/library?q=fractions", token)
    assert status == 200 and b'"lesson-1"' in body and b"/library/lesson-1/camera.webm" in body
    status, body, headers = await get(relay, f"/library/{lesson}/camera.webm?token={token}", None)
    assert status == 200 and body[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    assert headers["Accept-Ranges"] == "bytes"


async def test_range_requests_seek_and_bad_ranges_get_416(
    relay: RelayUnderTest, lesson: str
) -> None:
    token = relay.token("r", "teacher")
    path = f"/library/{lesson}/camera.webm"
    status, body, headers = await get(relay, path, token, Range="bytes=100-199")
    assert status == 206 and len(body) == 100
    size = int(headers["Content-Range"].rsplit("/", 1)[1])
    status, _, _ = await get(relay, path, token, Range=f"bytes={size + 10}-{size + 20}")
    assert status == 416
    status, body, headers = await get(relay, path, token, Range="bytes=-0")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}" and len(body) < 100
    status, body, _ = await get(relay, path, token, Range="bytes=-10")
    assert status == 206 and len(body) == 10


async def test_a_room_admin_deletes_only_its_own_rooms_lessons(
    relay: RelayUnderTest, tmp_path: Path
) -> None:
    add_lesson(relay.catalog, tmp_path, "theirs-1", title="Theirs", room="other")
    url = f"{relay.base}/api/library/theirs-1"
    for token, status in (
        (relay.token("mine", "admin", "a"), 403),
        (relay.token("other", "admin", "b"), 200),
    ):
        async with (
            aiohttp.ClientSession() as http,
            http.delete(url, headers={"Authorization": f"Bearer {token}"}) as reply,
        ):
            assert reply.status == status


async def test_download_names_the_file(relay: RelayUnderTest, lesson: str) -> None:
    status, _, headers = await get(
        relay, f"/library/{lesson}/camera.webm?download=1", relay.token("r", "classroom")
    )
    assert status == 200
    assert headers["Content-Disposition"] == 'attachment; filename="lesson-1-camera.webm"'


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/library/lesson-1/..%2F..%2Fsecret", 404),
        ("/library/..%2Fdata/camera.webm", 400),
        ("/library/lesson-1/meta.json", 404),
        ("/library/nope/camera.webm", 404),
        ("/api/library/nope", 404),
        ("/api/library/bad%20id", 400),
        ("/api/library?since=tomorrow", 400),
    ],
)
async def test_bad_paths_and_ids_are_refused(
    relay: RelayUnderTest, lesson: str, path: str, status: int
) -> None:
    got, body, _ = await get(relay, path, relay.token("r", "classroom"))
    assert got == status, body


async def test_the_library_needs_a_token(relay: RelayUnderTest, lesson: str) -> None:
    assert (await get(relay, "/api/library", None))[0] == 401
    assert (await get(relay, f"/library/{lesson}/camera.webm", None))[0] == 401
    status, body, _ = await get(relay, "/library?token=bad", None)
    assert status == 401 and "链接无效或已过期".encode() in body


async def test_only_admins_delete(relay: RelayUnderTest, lesson: str) -> None:
    async with aiohttp.ClientSession() as http:
        for token, status in ((relay.token("r", "teacher"), 403), (relay.token("*", "admin"), 200)):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.delete(f"{relay.base}/api/library/{lesson}", headers=headers) as reply:
                assert reply.status == status
        async with http.delete(f"{relay.base}/api/library/{lesson}", headers=headers) as reply:
            assert reply.status == 404
    assert not (relay.config.storage.data_dir / "library" / lesson).exists()
