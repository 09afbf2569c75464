"""The benchmark: its pure parts on literal data, and a real smoke run against both servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.bench import report
from relay.bench.command import options_from
from relay.bench.media import read_stamp, stamp
from relay.bench.runner import percentile
from relay.bench.targets import cpu_seconds, process_tree, total

ROOT = Path(__file__).resolve().parents[2]


def test_stamp_round_trips_and_unstamped_frames_read_as_none() -> None:
    frame = b"\x10\x02\x00\x9d\x01\x2a" + b"x" * 50
    assert read_stamp(stamp(frame, 1234, 987_654_321)) == (1234, 987_654_321)
    assert read_stamp(frame) is None
    assert read_stamp(b"") is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([3.0], 95, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 3.0), ([5.0, 1.0], 95, 5.0)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def fake_results() -> dict[str, Any]:
    def row(n: int, cpu: float) -> dict[str, Any]:
        return {"classrooms": n, "cpu_ms_per_s": cpu, "rss_bytes": 100_000_000 + n * 1_000_000}

    def server(base: float, per: float) -> dict[str, Any]:
        return {
            "baseline": {"cpu_ms_per_s": base, "rss_bytes": 100_000_000},
            "rows": [row(10, base + 10 * per), row(20, base + 20 * per)],
        }

    return {
        "clip": {"width": 1280, "height": 720, "fps": 30, "video_bitrate": 1.5e6},
        "machine": {"cpus": 2, "server_cores": [0], "client_cores": [1]},
        "options": {"counts": [10, 20]},
        "servers": {"ketang": server(20.0, 5.0), "janus": server(10.0, 10.0)},
    }


def test_marginal_cpu_and_memory_per_classroom_are_derived() -> None:
    results = fake_results()
    report.add_derived(results)
    ketang = results["servers"]["ketang"]["rows"]
    assert [r["marginal_ms_per_s"] for r in ketang] == [5.0, 5.0]
    assert ketang[1]["rss_per_classroom_mb"] == pytest.approx(1.0)


def test_markdown_puts_servers_side_by_side_with_our_ratio() -> None:
    results = fake_results()
    report.add_derived(results)
    table = report.markdown(results)
    assert "| N = 10 | ketang | janus | ours/Janus |" in table
    assert "| marginal ms/s per added classroom | 5.00 | 10.00 | 0.50 |" in table


@pytest.mark.timeout(240)
def test_smoke_run_against_both_servers_writes_sane_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    command = [sys.executable, "-m", "relay", "bench", "--smoke", "--peer", "janus"]
    result = subprocess.run(
        [*command, "--results", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "100% done" in result.stderr  # the progress display ran to the end
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["servers"]) == {"ketang", "janus"}
    for server in results["servers"].values():
        (row,) = server["rows"]
        assert row["classrooms"] == 3
        assert 0 < row["cpu_ms_per_s"] < 1000 * results["machine"]["cpus"]
        assert 0 < row["fps_min"] <= row["fps_mean"] + 1e-9 < 40
        assert row["join_p50_ms"] <= row["join_p95_ms"]
        assert row["latency_p50_ms"] is not None and row["latency_p50_ms"] > 0
    assert "ours/Janus" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "cpu.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--classrooms", "10,x"], "--classrooms needs positive numbers"),
        (["--classrooms", "0"], "--classrooms needs positive numbers"),
        (["--seconds", "0"], "--seconds must be positive"),
        (["--server-cores", "99"], "not all available here"),
        (["--client-cores", "one"], "must be numbers"),
    ],
)
def test_bad_bench_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from relay.cli import main

    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "receiver"),
    [
        ([], "light"),
        (["--smoke"], "full"),
        (["--smoke", "--receiver", "light"], "light"),
        (["--receiver", "full"], "full"),
    ],
)
def test_big_runs_use_light_classrooms_and_the_smoke_run_full_ones(
    argv: list[str], receiver: str
) -> None:
    from relay.cli import build_parser

    args = build_parser().parse_args(["bench", "--peer", "ketang-workers2", *argv])
    options = options_from(args)
    assert options.receiver == receiver
    assert options.peers == ("ketang", "ketang-workers2")


def test_server_cpu_covers_the_process_tree_and_skips_processes_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert total(cpu_seconds, [os.getpid(), 2**22 + 1]) == pytest.approx(
            cpu_seconds(os.getpid()), abs=0.05
        )
    finally:
        child.kill()
        child.wait()
