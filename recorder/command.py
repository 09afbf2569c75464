"""`ketang library list|rebuild|recover|import|export`: the library for admins, offline.

They work on `<data-dir>/library` and `<data-dir>/recordings` directly; `recover` and `import`
are meant for when the relay is stopped (a running relay recovers at start by itself).
Long work reports progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.library import Catalog, LocalStore, check_id
from recorder.remux import publish
from relay.core.errors import BadRequest

Run = Callable[[argparse.Namespace, Path], int]


def progress(label: str) -> Callable[[float], None]:
    """A one-line progress display on stderr."""

    def show(share: float) -> None:
        end = "\n" if share >= 1 else ""
        print(f"\r{label}: {100 * share:5.1f}%", end=end, file=sys.stderr, flush=True)

    return show


def _catalog(data_dir: Path) -> Catalog:
    return Catalog(LocalStore(data_dir / "library"))


def run_list(args: argparse.Namespace, data_dir: Path) -> int:
    lessons = _catalog(data_dir).search(args.query or "")
    if args.json:
        print(json.dumps(lessons, ensure_ascii=False, indent=1))
        return 0
    for meta in lessons:
        day = datetime.fromtimestamp(meta.get("started", 0), UTC).strftime("%Y-%m-%d %H:%M")
        minutes = meta.get("duration", 0) / 60
        size = meta.get("size", 0) / 1e6
        title = meta.get("title") or meta.get("room", "")
        teacher = meta.get("teacher", "")
        print(f"{meta['id']}  {day}  {minutes:6.1f} min  {size:7.1f} MB  {title}  ({teacher})")
    print(f"{len(lessons)} lessons", file=sys.stderr)
    return 0


def run_rebuild(args: argparse.Namespace, data_dir: Path) -> int:
    store = LocalStore(data_dir / "library")
    count = Catalog(store).rebuild()
    broken = [
        d.name
        for d in (data_dir / "library").iterdir()
        if d.is_dir() and not d.name.endswith(".partial") and d.name not in set(store.ids())
    ]
    print(f"{count} lessons in the catalog")
    for name in broken:
        print(f"skipped {name}: no readable meta.json", file=sys.stderr)
    return 0


def run_recover(args: argparse.Namespace, data_dir: Path) -> int:
    store = LocalStore(data_dir / "library")
    root = data_dir / "recordings"
    failed = 0
    for recording in sorted(root.iterdir()) if root.exists() else []:
        try:
            meta = publish(recording, store.entry(recording.name), progress(recording.name))
        except (ValueError, OSError) as error:
            print(f"{recording.name}: not recovered: {error}", file=sys.stderr)
            failed += 1
            continue
        shutil.rmtree(recording)
        print(f"{meta['id']}: {meta['duration']:.0f} s recovered")
    return 1 if failed else 0


def _copy(source: Path, target: Path, label: str) -> None:
    """Copy a lesson directory file by file, with progress; the target appears whole."""
    files = [f for f in sorted(source.iterdir()) if f.is_file()]
    total = sum(f.stat().st_size for f in files) or 1
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    show, done = progress(label), 0
    for file in files:
        shutil.copyfile(file, partial / file.name)
        done += file.stat().st_size
        show(done / total)
    partial.rename(target)


def run_import(args: argparse.Namespace, data_dir: Path) -> int:
    store = LocalStore(data_dir / "library")
    for source in args.paths:
        try:
            meta: dict[str, Any] = json.loads((source / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise BadRequest(f"{source} is not an exported lesson (no meta.json)") from None
        lesson_id = check_id(str(meta.get("id", "")))
        missing = [
            f["file"] for f in meta.get("files", {}).values() if not (source / f["file"]).exists()
        ]
        if missing:
            raise BadRequest(f"{source}: missing {', '.join(missing)}")
        if store.entry(lesson_id).exists():
            raise BadRequest(f"lesson {lesson_id} is already in the library")
        _copy(source, store.entry(lesson_id), lesson_id)
    return 0


def run_export(args: argparse.Namespace, data_dir: Path) -> int:
    store = LocalStore(data_dir / "library")
    store.meta(args.id)  # 404 if unknown
    target = args.destination / check_id(args.id)
    if target.exists():
        raise BadRequest(f"{target} exists")
    _copy(store.entry(args.id), target, args.id)
    print(target)
    return 0


def add_parser(commands: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `ketang library` and its subcommands; returns the `library` parser.

    Each action sets `action_run`, a `Run`. Resolving the data directory (the config file, the
    environment, `--data-dir`) is the caller's, so the caller sets `run` on the returned parser
    to a function that resolves it and calls `args.action_run(args, data_dir)`. Actions raise
    BadRequest and NotFound for the caller to report as usage errors (exit status 2)."""
    library = commands.add_parser("library", parents=[common], help="course library administration")
    library.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data directory (default ./data)"
    )
    actions = library.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list lessons, newest first")
    listing.add_argument("query", nargs="?", help="words to find in title, teacher, subject, grade")
    listing.add_argument("--json", action="store_true", help="print the metas as JSON")
    listing.set_defaults(action_run=run_list)
    actions.add_parser("rebuild", help="rebuild the catalog from disk").set_defaults(
        action_run=run_rebuild
    )
    actions.add_parser(
        "recover", help="publish recordings a crash left behind (relay stopped)"
    ).set_defaults(action_run=run_recover)
    importing = actions.add_parser("import", help="add exported lesson directories")
    importing.add_argument("paths", nargs="+", type=Path, metavar="DIR")
    importing.set_defaults(action_run=run_import)
    exporting = actions.add_parser("export", help="copy a lesson out (e.g. to a USB drive)")
    exporting.add_argument("id", metavar="LESSON")
    exporting.add_argument("destination", type=Path, metavar="DIR")
    exporting.set_defaults(action_run=run_export)
    parser: argparse.ArgumentParser = library
    return parser
