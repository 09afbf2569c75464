"""`ketang library …` on a data directory: list, rebuild, recover, export and import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from recorder.command import add_parser
from recorder.library import Catalog, LocalStore
from relay.core.errors import UserError
from tests.recorder.lessons import add_lesson, record


def library(data: Path, *argv: str) -> int:
    """What `ketang library` does, with the CLI's part (setting `run`, resolving the data
    directory, reporting BadRequest and NotFound) played by this test."""
    parser = argparse.ArgumentParser(prog="ketang")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands, argparse.ArgumentParser(add_help=False)).set_defaults(
        run=lambda args: args.action_run(args, args.data_dir)
    )
    args = parser.parse_args(["library", "--data-dir", str(data), *argv])
    try:
        result: int = args.run(args)
    except UserError as error:
        print(f"ketang: error: {error}", file=sys.stderr)
        return 2
    return result


def test_add_parser_leaves_run_to_its_caller() -> None:
    parser = argparse.ArgumentParser()
    library_parser = add_parser(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    assert library_parser.get_default("run") is None
    args = parser.parse_args(["library", "rebuild"])
    assert args.data_dir is None and callable(args.action_run)


def test_recover_publishes_what_a_crash_left_and_list_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    record(data / "recordings" / "crashed-1", title="Fractions")
    assert library(data, "recover") == 0
    out, err = capsys.readouterr()
    assert "crashed-1: 4 s recovered" in out and "100.0%" in err
    assert not (data / "recordings" / "crashed-1").exists()
    assert library(data, "list", "fractions") == 0
    assert "crashed-1" in capsys.readouterr().out
    assert library(data, "list", "--json") == 0
    (meta,) = json.loads(capsys.readouterr().out)
    assert meta["files"]["camera"]["video_frames"] == 120


def test_export_then_import_moves_a_lesson_between_relays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, stick = tmp_path / "a", tmp_path / "b", tmp_path / "usb"
    add_lesson(Catalog(LocalStore(first / "library")), tmp_path, "l1")
    assert library(first, "export", "l1", str(stick)) == 0
    assert library(second, "import", str(stick / "l1")) == 0
    assert library(second, "rebuild") == 0
    assert "1 lessons in the catalog" in capsys.readouterr().out
    copied = LocalStore(second / "library").path("l1", "camera.webm").read_bytes()
    assert copied == LocalStore(first / "library").path("l1", "camera.webm").read_bytes()
    assert library(second, "import", str(stick / "l1")) == 2  # already there
    assert "already in the library" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [("export", "nope", "/tmp/x"), ("export", "../etc", "/tmp/x"), ("import", "/nonexistent")],
)
def test_bad_ids_and_paths_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    assert library(tmp_path, *args) == 2
    assert "ketang: error:" in capsys.readouterr().err
