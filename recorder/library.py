"""The course library: published lessons on disk, and the catalog rebuilt from them.

`LocalStore` keeps each lesson as a directory `<data-dir>/library/<lesson-id>/` with its media,
`poster.jpg` and `meta.json`. Everything that reads or removes lesson files goes through the
`Store` interface, so a shared store (S3-compatible, a shared mount) can replace it; the
catalog is only an index of the metas, rebuilt from the store at start and by
`ketang library rebuild`.

Ids and file names from requests are checked against strict patterns and against what the
lesson's meta lists, so no path outside the library is ever read or touched.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from relay.core.errors import BadRequest, NotFound

LESSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a room name may hold dots
FILE_NAME = re.compile(r"^[a-z]+\.(webm|jpg)$")
SEARCHED = ("title", "teacher", "subject", "grade", "room", "school")


def check_id(lesson_id: str) -> str:
    if not LESSON_ID.match(lesson_id):
        raise BadRequest(f"bad lesson id {lesson_id!r}")
    return lesson_id


class Store(Protocol):
    """Where published lessons live."""

    def ids(self) -> Iterable[str]: ...
    def meta(self, lesson_id: str) -> dict[str, Any]: ...
    def path(self, lesson_id: str, name: str) -> Path: ...
    def delete(self, lesson_id: str) -> None: ...
    def entry(self, lesson_id: str) -> Path: ...


class LocalStore:
    """Lessons as directories under one root on the local filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def ids(self) -> Iterator[str]:
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and LESSON_ID.match(child.name) and (child / "meta.json").exists():
                yield child.name

    def entry(self, lesson_id: str) -> Path:
        """The directory a lesson is published into (it may not exist yet)."""
        return self.root / check_id(lesson_id)

    def meta(self, lesson_id: str) -> dict[str, Any]:
        path = self.entry(lesson_id) / "meta.json"
        try:
            meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no lesson {lesson_id!r} in the library") from None
        return meta

    def path(self, lesson_id: str, name: str) -> Path:
        """A file of a lesson that its meta lists; 404 for anything else."""
        meta = self.meta(lesson_id)
        listed = {f["file"] for f in meta.get("files", {}).values()} | {meta.get("poster")}
        if not FILE_NAME.match(name) or name not in listed:
            raise NotFound(f"lesson {lesson_id!r} has no file {name!r}")
        return self.entry(lesson_id) / name

    def delete(self, lesson_id: str) -> None:
        self.meta(lesson_id)  # 404 if unknown
        shutil.rmtree(self.entry(lesson_id))


class Catalog:
    """The library's index: every lesson's meta, searchable, newest first."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lessons: dict[str, dict[str, Any]] = {}
        self.rebuild()

    def rebuild(self) -> int:
        """Re-read every meta from the store; returns how many lessons there are."""
        lessons = {}
        for lesson_id in self.store.ids():
            try:
                lessons[lesson_id] = self.store.meta(lesson_id)
            except (ValueError, NotFound):
                continue  # a damaged entry is skipped, not fatal to the library
        self.lessons = lessons
        return len(lessons)

    def add(self, meta: dict[str, Any]) -> None:
        self.lessons[meta["id"]] = meta

    def remove(self, lesson_id: str) -> None:
        self.store.delete(lesson_id)
        self.lessons.pop(lesson_id, None)

    def get(self, lesson_id: str) -> dict[str, Any]:
        meta = self.lessons.get(check_id(lesson_id))
        if meta is None:
            raise NotFound(f"no lesson {lesson_id!r} in the library")
        return meta

    def search(
        self, text: str = "", since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        """Lessons whose title, teacher, subject, grade, room or school contain every word of
        `text`, started within [since, until] (ISO dates), newest first."""
        words = text.lower().split()
        low = _day(since, "since") if since else None
        high = _day(until, "until") if until else None
        found = []
        for meta in self.lessons.values():
            haystack = " ".join(str(meta.get(k) or "") for k in SEARCHED).lower()
            started = datetime.fromtimestamp(meta.get("started", 0), UTC).date().isoformat()
            in_range = (not low or started >= low) and (not high or started <= high)
            if in_range and all(w in haystack for w in words):
                found.append(meta)
        return sorted(found, key=lambda m: m.get("started", 0), reverse=True)


def _day(value: str, name: str) -> str:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD") from None
