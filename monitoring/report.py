"""`ketang report`: which schools had poor lessons, how often, and since when.

It reads the per-lesson quality summaries the relay writes to `<data-dir>/quality/` (they
outlive Prometheus's retention) and prints one row per school (the classroom name its link
was made for), optionally as CSV.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True, slots=True)
class SchoolRow:
    school: str
    lessons: int
    minutes: float
    bandwidth_p50: int  # median over its lessons, bits per second
    bandwidth_p5: int  # the worst lesson's 5th percentile
    loss: float  # mean
    freeze_ratio: float  # mean
    poor_lessons: int
    poor_share: float
    poor_since: str  # first day of the latest run of poor lessons, "" if the last was fine


def load(directory: Path) -> list[dict[str, Any]]:
    """Every stored lesson summary, oldest first; unreadable files are skipped."""
    lessons = []
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        try:
            lessons.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(lessons, key=lambda lesson: lesson.get("started", 0))


def _day(timestamp: float) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()


def rows(
    lessons: Iterable[dict[str, Any]], since: date, until: date, school: str = ""
) -> list[SchoolRow]:
    """One row per school with lessons between `since` and `until` (inclusive), worst first."""
    per_school: dict[str, list[tuple[date, dict[str, Any]]]] = defaultdict(list)
    for lesson in lessons:
        day = _day(lesson.get("started", 0))
        if not since <= day <= until:
            continue
        for entry in lesson.get("classrooms", []):
            if school.lower() in entry["classroom"].lower():
                per_school[entry["classroom"]].append((day, entry))
    table = [_row(name, entries) for name, entries in per_school.items()]
    return sorted(table, key=lambda r: (-r.poor_share, r.school))


def _row(name: str, entries: list[tuple[date, dict[str, Any]]]) -> SchoolRow:
    summaries = [e for _, e in entries]
    poor = [e["poor"] for e in summaries]
    since = ""
    for day, entry in reversed(entries):
        if not entry["poor"]:
            break
        since = day.isoformat()
    return SchoolRow(
        school=name,
        lessons=len(entries),
        minutes=round(sum(e["attended_minutes"] for e in summaries), 1),
        bandwidth_p50=round(statistics.median(e["bandwidth_p50"] for e in summaries)),
        bandwidth_p5=min(e["bandwidth_p5"] for e in summaries),
        loss=round(statistics.fmean(e["loss"] for e in summaries), 4),
        freeze_ratio=round(statistics.fmean(e["freeze_ratio"] for e in summaries), 4),
        poor_lessons=sum(poor),
        poor_share=round(sum(poor) / len(poor), 3),
        poor_since=since,
    )


def print_table(table: list[SchoolRow], out: TextIO) -> None:
    columns = ("lessons", "minutes", "kbit/s p50", "p5", "loss", "frozen", "poor")
    widths = (7, 8, 10, 6, 6, 7, 9)
    cells = " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(f"{'school':<28} {cells}  poor since", file=out)
    for r in table:
        poor = f"{r.poor_lessons}/{r.lessons}"
        print(
            f"{r.school[:28]:<28} {r.lessons:>7} {r.minutes:>8.1f} {r.bandwidth_p50 / 1000:>10.0f}"
            f" {r.bandwidth_p5 / 1000:>6.0f} {100 * r.loss:>5.1f}% {100 * r.freeze_ratio:>6.1f}%"
            f" {poor:>9}  {r.poor_since or '-'}",
            file=out,
        )


def write_csv(table: list[SchoolRow], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=list(SchoolRow.__dataclass_fields__))
    writer.writeheader()
    for row in table:
        writer.writerow(asdict(row))
