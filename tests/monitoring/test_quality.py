"""Per-lesson quality summaries, and `ketang report` over them."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring.quality import LessonQuality, QualitySample
from relay.cli import main


def sampled(
    estimates: list[float], loss: float, layer: str, frozen: list[float]
) -> dict[str, object]:
    quality = LessonQuality(interval=5.0)
    for estimate, freeze in zip(estimates, frozen, strict=True):
        quality.add("Hope Primary", QualitySample(estimate, loss, layer, freeze))
    (summary,) = quality.summary()
    return summary


def test_a_classroom_summary_gives_minutes_bandwidth_loss_freezes_and_layers() -> None:
    estimates = [1_000_000.0] * 18 + [200_000.0, 100_000.0]  # 100 s, two bad samples at the end
    summary = sampled(estimates, 0.01, "source", [0.0] * 19 + [3.0])
    assert summary == {
        "classroom": "Hope Primary",
        "attended_minutes": 1.67,
        "bandwidth_p50": 1_000_000,
        "bandwidth_p5": 200_000,
        "loss": 0.01,
        "freeze_ratio": 0.03,
        "renditions": {"source": 1.67},
        "poor": True,  # 3 s frozen in 100 s: over 2 %
    }


@pytest.mark.parametrize(
    ("estimate", "loss", "frozen", "poor"),
    [
        (1_000_000, 0.01, 0.0, False),
        (1_000_000, 0.08, 0.0, True),  # loss
        (250_000, 0.0, 0.0, True),  # too thin for a readable picture
        (1_000_000, 0.0, 1.0, False),  # 1 s in 100 s
    ],
)
def test_poor_means_loss_freezes_or_a_thin_link(
    estimate: float, loss: float, frozen: float, poor: bool
) -> None:
    assert sampled([estimate] * 20, loss, "180p", [0.0] * 19 + [frozen])["poor"] is poor


def lesson(directory: Path, day: str, entries: dict[str, bool]) -> None:
    started = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    classrooms = [
        {
            "classroom": name,
            "attended_minutes": 40.0,
            "bandwidth_p50": 250_000 if poor else 900_000,
            "bandwidth_p5": 150_000 if poor else 700_000,
            "loss": 0.06 if poor else 0.01,
            "freeze_ratio": 0.05 if poor else 0.0,
            "renditions": {"180p" if poor else "source": 40.0},
            "poor": poor,
        }
        for name, poor in entries.items()
    ]
    record = {"id": f"l-{day}", "started": started, "classrooms": classrooms}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"l-{day}.json").write_text(json.dumps(record))


def test_report_lists_schools_worst_first_with_since_when(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quality = tmp_path / "data" / "quality"
    lesson(quality, "2026-09-01", {"Hope Primary": False, "Shuangfeng Village": True})
    lesson(quality, "2026-09-08", {"Hope Primary": False, "Shuangfeng Village": False})
    lesson(quality, "2026-09-15", {"Hope Primary": True, "Shuangfeng Village": True})
    lesson(quality, "2026-09-22", {"Hope Primary": False, "Shuangfeng Village": True})
    lesson(
        quality, "2026-12-01", {"Hope Primary": True, "Shuangfeng Village": True}
    )  # out of range
    out_csv = tmp_path / "report.csv"
    argv = [
        "report",
        "--from",
        "2026-09-01",
        "--to",
        "2026-09-30",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert main([*argv, "--csv", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["school", "lessons", "minutes"]
    assert lines[1].split()[:2] == ["Shuangfeng", "Village"] and lines[1].endswith(
        "3/4  2026-09-15"
    )
    assert lines[2].startswith("Hope Primary") and lines[2].endswith("1/4  -")
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert [(r["school"], r["poor_lessons"], r["poor_since"]) for r in rows] == [
        ("Shuangfeng Village", "3", "2026-09-15"),
        ("Hope Primary", "1", ""),
    ]
    assert rows[0]["minutes"] == "160.0" and rows[0]["bandwidth_p5"] == "150000"
    assert main([*argv, "--school", "hope"]) == 0
    assert "Shuangfeng" not in capsys.readouterr().out


def test_report_refuses_a_bad_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--from", "last week", "--to", "2026-01-01"]) == 2
    assert "not a date" in capsys.readouterr().err
