"""The Grafana dashboards, written as data: `python -m monitoring.dashboards` regenerates the
JSON files in monitoring/grafana/dashboards/ (the test suite checks they are up to date and
evaluates every query against a real Prometheus).

Each node of a cluster serves its own /metrics and Prometheus scrapes them all, so a query
adds the nodes up: counters and process figures are summed, a room's series are taken once
whichever nodes carry its lesson (an edge node that pulls a lesson reports it live too, and
the pull's rate as its teacher uplink), and per-classroom series stay per classroom (a
classroom is on one node).

- overview: what is live now across the county, and the relays' health;
- lesson: one room's classrooms over time (the drill-down);
- schools: each school's link over days and weeks, to find the ones held back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "ketang-prometheus"}
OUT = Path(__file__).parent / "grafana" / "dashboards"
ROOM = 'room=~"$room"'

Panel = tuple[str, str, str, str]  # title, kind, unit, PromQL

OVERVIEW: list[Panel] = [
    (
        "Lessons live",
        "stat",
        "none",
        "count(count by (room) (ketang_teacher_uplink_bits_per_second)) or vector(0)",
    ),
    ("Classrooms connected", "stat", "none", "sum(ketang_classrooms_connected)"),
    (
        "Nodes",  # in the cluster's directory; else the relays that answer scrapes
        "stat",
        "none",
        'max(ketang_cluster_nodes) or count(up{job="ketang"} == 1)',
    ),
    ("Nodes scraped", "stat", "none", 'count(up{job="ketang"} == 1) or vector(0)'),
    (
        "Classrooms losing over 2 %",
        "stat",
        "none",
        "count(ketang_classroom_loss_ratio > 0.02) or vector(0)",
    ),
    (
        "Classrooms by picture layer",
        "piechart",
        "none",
        "count by (layer) (ketang_classroom_layer_info)",
    ),
    ("Sent to classrooms", "timeseries", "bps", "8 * sum(rate(ketang_forwarded_bytes_total[1m]))"),
    (
        "Teacher uplinks",
        "timeseries",
        "bps",
        "max by (room, source) (ketang_teacher_uplink_bits_per_second)",
    ),
    (
        "Most frozen classrooms (share of time)",
        "table",
        "percentunit",
        "topk(10, rate(ketang_classroom_freeze_seconds_total[5m]))",
    ),
    (
        "Join time p95, since each relay started",
        "stat",
        "s",
        "histogram_quantile(0.95, sum by (le) (ketang_join_seconds_bucket))",
    ),
    (
        "Layer changes",
        "timeseries",
        "none",
        "sum by (reason) (increase(ketang_rendition_switches_total[5m]))",
    ),
    (
        "Keyframe requests to teachers",
        "timeseries",
        "none",
        "sum by (source) (increase(ketang_keyframe_requests_total[5m]))",
    ),
    (
        "Rendition encode time p95 (per teacher frame)",
        "timeseries",
        "s",
        "histogram_quantile(0.95, sum by (le) (rate(ketang_ladder_frame_seconds_bucket[5m])))",
    ),
    ("Recording written", "timeseries", "Bps", "sum(rate(ketang_recorder_bytes_total[1m]))"),
    ("Event-loop lag, worst node", "timeseries", "s", "max(ketang_event_loop_lag_seconds)"),
    (
        "Relay CPU, all nodes (cores)",
        "timeseries",
        "none",
        'sum(rate(process_cpu_seconds_total{job="ketang"}[1m]))',
    ),
    (
        "Busiest node's CPU (share of its one core)",
        "timeseries",
        "percentunit",
        'max(rate(process_cpu_seconds_total{job="ketang"}[1m]))',
    ),
    (
        "Relay memory, all nodes",
        "timeseries",
        "bytes",
        'sum(process_resident_memory_bytes{job="ketang"})',
    ),
]

LESSON: list[Panel] = [
    ("Classrooms", "stat", "none", f"sum(ketang_classrooms_connected{{{ROOM}}})"),
    (
        "Teacher uplink",
        "timeseries",
        "bps",
        f"max by (room, source) (ketang_teacher_uplink_bits_per_second{{{ROOM}}})",
    ),
    (
        "Estimated bandwidth",
        "timeseries",
        "bps",
        f"ketang_classroom_bandwidth_estimate_bits_per_second{{{ROOM}}}",
    ),
    ("Sent", "timeseries", "bps", f"ketang_classroom_sent_bits_per_second{{{ROOM}}}"),
    ("Picture layer", "table", "none", f"ketang_classroom_layer_info{{{ROOM}}}"),
    ("Loss", "timeseries", "percentunit", f"ketang_classroom_loss_ratio{{{ROOM}}}"),
    ("Round-trip time", "timeseries", "s", f"ketang_classroom_rtt_seconds{{{ROOM}}}"),
    ("Jitter", "timeseries", "s", f"ketang_classroom_jitter_seconds{{{ROOM}}}"),
    (
        "Frozen share of time (from the classroom page)",
        "timeseries",
        "percentunit",
        f"rate(ketang_classroom_freeze_seconds_total{{{ROOM}}}[1m])",
    ),
    ("Frames per second shown", "timeseries", "none", f"ketang_classroom_fps{{{ROOM}}}"),
    ("Picture height", "timeseries", "none", f"ketang_classroom_frame_height_pixels{{{ROOM}}}"),
    (
        "Audio concealed",
        "timeseries",
        "percentunit",
        f"ketang_classroom_audio_concealment_ratio{{{ROOM}}}",
    ),
    (
        "Resend requests (NACK)",
        "timeseries",
        "none",
        f"rate(ketang_classroom_nacks_total{{{ROOM}}}[1m])",
    ),
    (
        "Keyframe requests (PLI)",
        "timeseries",
        "none",
        f"rate(ketang_classroom_picture_losses_total{{{ROOM}}}[1m])",
    ),
]

SCHOOLS: list[Panel] = [
    (
        "Median bandwidth per school, last 7 days",
        "bargauge",
        "bps",
        "max by (classroom) (quantile_over_time(0.5,"
        " ketang_classroom_bandwidth_estimate_bits_per_second[7d]))",
    ),
    (
        "5th-percentile bandwidth per school, last 7 days",
        "bargauge",
        "bps",
        "min by (classroom) (quantile_over_time(0.05,"
        " ketang_classroom_bandwidth_estimate_bits_per_second[7d]))",
    ),
    (
        "Mean loss per school, per day",
        "timeseries",
        "percentunit",
        "avg by (classroom) (avg_over_time(ketang_classroom_loss_ratio[1d]))",
    ),
    (
        "Frozen seconds per school, per day",
        "timeseries",
        "s",
        "sum by (classroom) (increase(ketang_classroom_freeze_seconds_total[1d]))",
    ),
    (
        "Samples on 180p or less per school, per day",
        "timeseries",
        "none",
        "sum by (classroom) (count_over_time("
        'ketang_classroom_layer_info{layer=~"180p|still|paused"}[1d]))',
    ),
]


def width(spec: Panel) -> int:
    return 6 if spec[1] == "stat" else 12


def grid(panels: list[Panel]) -> list[dict[str, int]]:
    """Panels left to right in rows of 24 columns, in list order."""
    places, x, y = [], 0, 0
    for spec in panels:
        if x + width(spec) > 24:
            x, y = 0, y + 8
        places.append({"h": 8, "w": width(spec), "x": x, "y": y})
        x += width(spec)
    return places


def panel(index: int, spec: Panel, place: dict[str, int]) -> dict[str, Any]:
    title, kind, unit, expr = spec
    return {
        "id": index + 1,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": place,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": expr, "legendFormat": ""}],
    }


def dashboard(uid: str, title: str, panels: list[Panel], span: str, room: bool) -> dict[str, Any]:
    variables = []
    if room:
        variables.append({
            "name": "room",
            "label": "Room",
            "type": "query",
            "datasource": DATASOURCE,
            "query": "label_values(ketang_classrooms_connected, room)",
            "refresh": 2,
            "includeAll": True,
            "multi": False,
        })  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "tags": ["ketang"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s" if span == "now-1h" else "",
        "time": {"from": span, "to": "now"},
        "templating": {"list": variables},
        "panels": [
            panel(i, *each) for i, each in enumerate(zip(panels, grid(panels), strict=True))
        ],
    }


DASHBOARDS = {
    "overview.json": dashboard("ketang-overview", "Ketang: overview", OVERVIEW, "now-1h", False),
    "lesson.json": dashboard("ketang-lesson", "Ketang: lesson drill-down", LESSON, "now-1h", True),
    "schools.json": dashboard(
        "ketang-schools", "Ketang: schools over time", SCHOOLS, "now-30d", False
    ),
}


def write() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, board in DASHBOARDS.items():
        (OUT / name).write_text(json.dumps(board, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write()
