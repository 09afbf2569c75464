"""Publishing a recording, and finding lessons in the catalog."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from recorder.library import Catalog, LocalStore
from recorder.recorder import new_lesson_id
from relay.core.errors import BadRequest, NotFound
from tests.recorder.lessons import add_lesson


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(LocalStore(tmp_path / "library"))


def test_a_published_lesson_plays_with_its_frames_and_poster(
    catalog: Catalog, tmp_path: Path
) -> None:
    meta = add_lesson(catalog, tmp_path, "l1", title="Fractions")
    path = catalog.store.path("l1", "camera.webm")
    with av.open(str(path)) as container:
        video = sum(1 for _ in container.decode(video=0))
    assert video == meta["files"]["camera"]["video_frames"] == 120
    assert meta["duration"] == pytest.approx(4.0, abs=0.1)
    assert meta["sources"] == ["camera"] and meta["title"] == "Fractions"
    assert catalog.store.path("l1", "poster.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert not (tmp_path / "library" / "l1.partial").exists()


def test_the_catalog_rebuilds_from_disk(catalog: Catalog, tmp_path: Path) -> None:
    add_lesson(catalog, tmp_path, "l1")
    add_lesson(catalog, tmp_path, "l2")
    (tmp_path / "library" / "junk").mkdir()  # no meta: not a lesson
    fresh = Catalog(LocalStore(tmp_path / "library"))
    assert sorted(fresh.lessons) == ["l1", "l2"]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("", ["b", "a"]),
        ("fractions", ["a"]),
        ("music grade5", ["b"]),
        ("wang", ["b", "a"]),
        ("physics", []),
    ],
)
def test_search_matches_every_word_in_title_teacher_subject_grade(
    catalog: Catalog, tmp_path: Path, query: str, found: list[str]
) -> None:
    add_lesson(catalog, tmp_path, "a", title="Fractions", subject="math", started=1000)
    add_lesson(catalog, tmp_path, "b", title="Notes", subject="music", grade="grade5", started=2000)
    assert [m["id"] for m in catalog.search(query)] == found


def test_search_by_date_range(catalog: Catalog, tmp_path: Path) -> None:
    add_lesson(catalog, tmp_path, "a", started=1_700_000_000)  # 2023-11-14
    add_lesson(catalog, tmp_path, "b", started=1_800_000_000)  # 2027-01-15
    assert [m["id"] for m in catalog.search(since="2024-01-01")] == ["b"]
    assert [m["id"] for m in catalog.search(until="2024-01-01")] == ["a"]
    with pytest.raises(BadRequest, match="YYYY-MM-DD"):
        catalog.search(since="yesterday")


@pytest.mark.parametrize(
    ("lesson_id", "name", "error"),
    [
        ("../secret", "camera.webm", BadRequest),
        ("l1", "../../secret", NotFound),
        ("l1", "meta.json", NotFound),  # not a listed media file
        ("l1", "screen.webm", NotFound),  # this lesson has no screen share
        ("nope", "camera.webm", NotFound),
    ],
)
def test_only_listed_files_of_known_lessons_are_reachable(
    catalog: Catalog, tmp_path: Path, lesson_id: str, name: str, error: type[Exception]
) -> None:
    add_lesson(catalog, tmp_path, "l1")
    with pytest.raises(error):
        catalog.store.path(lesson_id, name)


def test_a_lesson_of_a_room_with_dots_in_its_name_is_published(
    catalog: Catalog, tmp_path: Path
) -> None:
    lesson_id = new_lesson_id("grade5.music", 1_800_000_000)
    add_lesson(catalog, tmp_path, lesson_id)
    assert catalog.get(lesson_id)["id"] == lesson_id
    assert catalog.store.path(lesson_id, "camera.webm").exists()
