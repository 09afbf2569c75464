"""Benchmark output: JSON for machines, a Markdown table for people, a PNG chart of CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (key, heading, format) of every per-N figure, in table order
FIGURES = (
    ("served", "classrooms served (≥ 28 fps)", "{:.0f}"),
    ("cpu_ms_per_s", "server CPU ms/s", "{:.0f}"),
    ("cpu_ms_per_s_per_classroom", "CPU ms/s per classroom", "{:.2f}"),
    ("marginal_ms_per_s", "marginal ms/s per added classroom", "{:.2f}"),
    ("fps_min", "fps min", "{:.1f}"),
    ("fps_mean", "fps mean", "{:.1f}"),
    ("frames_lost", "frames lost", "{:.0f}"),
    ("video_mbps_mean", "video Mbit/s per classroom", "{:.2f}"),
    ("teacher_keyframes_per_s", "keyframes asked of the teacher per s", "{:.2f}"),
    ("join_p50_ms", "join p50 ms", "{:.0f}"),
    ("join_p95_ms", "join p95 ms", "{:.0f}"),
    ("signalling_p95_ms", "of which signalling p95 ms", "{:.0f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.1f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.1f}"),
    ("rss_per_classroom_mb", "RSS MB per classroom", "{:.2f}"),
    ("client_cpu_cores", "client cores busy", "{:.2f}"),
    ("per_worker", "classrooms per worker", "{}"),
)


# How each kind of classroom receives, for the table's heading.
RECEIVERS = {
    "full": "full receivers (SRTP, jitter buffer, NACK; frames not decoded)",
    "light": "light receivers (counted from clear RTP headers, no NACK) and one full receiver per "
    "worker, whose frame stamps give the latency",
}


def add_derived(results: dict[str, Any]) -> None:
    """Marginal CPU between consecutive N (from idle for the first) and RSS per classroom."""
    for server in results["servers"].values():
        previous_n, previous_cpu = 0, server["baseline"]["cpu_ms_per_s"]
        for row in server["rows"]:
            n = row["classrooms"]
            row["marginal_ms_per_s"] = (row["cpu_ms_per_s"] - previous_cpu) / (n - previous_n)
            row["rss_per_classroom_mb"] = (
                (row["rss_bytes"] - server["baseline"]["rss_bytes"]) / n / 1e6
            )
            previous_n, previous_cpu = n, row["cpu_ms_per_s"]


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """One table per N: each figure for every server, and ours/Janus when both ran."""
    servers = results["servers"]
    names = list(servers)
    machine = results["machine"]
    clip = results["clip"]
    receiver = RECEIVERS[results["options"].get("receiver", "full")]
    lines = [
        f"Lesson: {clip['width']}x{clip['height']} {clip['fps']} fps VP8 at "
        f"{clip['video_bitrate'] / 1e6:.2f} Mbit/s + Opus. Server on core(s) "
        f"{machine['server_cores']}, publisher and classrooms on core(s) {machine['client_cores']} "
        f"of {machine['cpus']}. Classrooms: {receiver}.",
        "",
    ]
    for index, n in enumerate(results["options"]["counts"]):
        header = ["N = " + str(n), *names] + (
            ["ours/Janus"] if "janus" in names and len(names) > 1 else []
        )
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, title, fmt in FIGURES:
            values = [servers[name]["rows"][index].get(key) for name in names]
            cells = [title, *(_cell(v, fmt) for v in values)]
            if len(header) > len(names) + 1:
                cells.append(_ratio(values[0], values[names.index("janus")]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """CPU (ms/s) against classrooms for every server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, server in results["servers"].items():
        counts = [0] + [row["classrooms"] for row in server["rows"]]
        cpu = [server["baseline"]["cpu_ms_per_s"]] + [row["cpu_ms_per_s"] for row in server["rows"]]
        axes.plot(counts, cpu, marker="o", label=name)
    axes.axhline(1000, color="grey", linestyle=":", label="one core")
    axes.set_xlabel("classrooms")
    axes.set_ylabel("server CPU (ms per second)")
    clip = results["clip"]
    lesson = f"{clip['height']}p{clip['fps']} VP8 {clip['video_bitrate'] / 1e6:.1f} Mbit/s + Opus"
    axes.set_title(f"Server CPU vs classrooms ({lesson})")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write results.json, results.md and cpu.png; returns their paths."""
    add_derived(results)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "results.json",
        "md": directory / "results.md",
        "png": directory / "cpu.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["md"].write_text(markdown(results))
    chart(results, paths["png"])
    return paths
