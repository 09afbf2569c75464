"""Metrics after a loopback lesson, scraped by a real Prometheus; every dashboard and alert
query evaluated against it. The values each panel returned go to test-artifacts/. The cluster
alert's logic is played through `promtool test rules` (alerts_test.yml beside this file)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from monitoring import metrics
from monitoring.dashboards import DASHBOARDS, DATASOURCE, OUT
from relay.bench.media import encode_video
from tests.conftest import RelayUnderTest, free_port
from tests.e2e.test_constrained_link import LoopedClip
from tests.media import ToneAudioTrack
from tests.peers import Playback, Publication, whep_play, whip_publish

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS = MONITORING / "prometheus"
ARTIFACTS = ROOT / "test-artifacts"
ROOM = "metrics"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian prometheus is not installed (make test installs it)",
)


def samples(text: str, name: str) -> dict[str, float]:
    """Label set (as `a=x,b=y`, sorted) -> value, for one metric in the exposition format."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if match:
            pairs = re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")
            found[",".join(f"{k}={v}" for k, v in sorted(pairs))] = float(match.group(2))
    return found


async def scrape(relay: RelayUnderTest) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.base}/metrics") as reply:
        return await reply.text()


def decoded(classroom: Playback) -> int:
    """Video frames the classroom decoded (the teacher's clip carries no counter to read)."""
    log = classroom.video[0]
    return len(log.records) + log.unreadable


async def wait_decoded(classroom: Playback, count: int) -> None:
    for _ in range(200):
        if decoded(classroom) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {decoded(classroom)} frames decoded")


async def report_qoe(
    relay: RelayUnderTest, classroom: Playback, name: str, frozen: float
) -> dict[str, float]:
    """What the classroom page sends every 5 s, from what this classroom really decoded."""
    before, sound = decoded(classroom), classroom.audio.count
    await asyncio.sleep(1.0)
    heard = classroom.audio.count - sound  # of 50 Opus frames a second
    stats = {
        "freezeCount": 1 if frozen else 0,
        "totalFreezesDuration": frozen,
        "framesPerSecond": float(decoded(classroom) - before),
        "frameWidth": classroom.video[0].last_size[0],
        "frameHeight": classroom.video[0].last_size[1],
        "concealmentRatio": max(0.0, 1 - heard / 50),
    }
    session = classroom.location.rsplit("/", 1)[1]
    token = relay.token(ROOM, "classroom", name)
    async with aiohttp.ClientSession() as http:
        url = f"{relay.base}/api/rooms/{ROOM}/events?token={token}"
        async with http.ws_connect(url) as ws:
            await ws.send_json({"type": "qoe", "session": session, "stats": stats})
            while (reply := await ws.receive_json(timeout=5))["type"] != "ok":
                assert reply["type"] != "error", reply
    return stats


class Lesson:
    """A teacher and two classrooms, one capped at 180p so the ladder runs."""

    def __init__(
        self, teacher: Publication, video: LoopedClip, full: Playback, low: Playback
    ) -> None:
        self.teacher, self.video, self.full, self.low = teacher, video, full, low
        self.reported: dict[str, float] = {}
        self.before = ""  # the exposition before the lesson: counters are per process


@pytest.fixture
async def lesson(relay: RelayUnderTest) -> AsyncIterator[Lesson]:
    # a teacher at a known rate (640x360, 800 kbit/s), so the 180p rung is worth making
    frames = await asyncio.to_thread(encode_video, 2.0, 640, 360, 30, 800_000)
    before = await scrape(relay)
    video = LoopedClip(frames)
    token = relay.token(ROOM, "teacher", "Ms Wang")
    teacher = await whip_publish(relay.base, ROOM, token, "camera", video, ToneAudioTrack())
    full = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "Hope Primary"))
    village = relay.token(ROOM, "classroom", "Village")
    low = await whep_play(relay.base, ROOM, village, quality="180p")
    for classroom in (full, low):
        await wait_decoded(classroom, 30)
    lesson = Lesson(teacher, video, full, low)
    lesson.before = before
    lesson.reported = await report_qoe(relay, full, "Hope Primary", 0.0)
    await report_qoe(relay, low, "Village", 0.4)
    try:
        yield lesson
    finally:
        await full.close()
        await low.close()
        await teacher.close()


async def test_metrics_after_a_lesson_with_known_traffic(
    relay: RelayUnderTest, lesson: Lesson
) -> None:
    text = await scrape(relay)
    assert samples(text, "ketang_lessons_live") == {"": 1.0}
    assert samples(text, "ketang_classrooms_connected") == {f"room={ROOM}": 2.0}
    layers = samples(text, "ketang_classroom_layer_info")
    assert layers == {
        f"classroom=Hope Primary,layer=source,room={ROOM},slot=video": 1.0,
        f"classroom=Village,layer=180p,room={ROOM},slot=video": 1.0,
    }
    fps = samples(text, "ketang_classroom_fps")
    assert fps[f"classroom=Hope Primary,room={ROOM}"] == lesson.reported["framesPerSecond"] >= 20
    heights = samples(text, "ketang_classroom_frame_height_pixels")
    assert heights == {
        f"classroom=Hope Primary,room={ROOM}": 360,
        f"classroom=Village,room={ROOM}": 180,
    }
    frozen = samples(text, "ketang_classroom_freeze_seconds_total")
    assert frozen[f"classroom=Village,room={ROOM}"] == 0.4
    # frames in = frames the teacher sent (within what is in flight); each went to both

    def grew(name: str, labels: str = "") -> float:
        return samples(text, name)[labels] - samples(lesson.before, name).get(labels, 0.0)

    frames_in = grew("ketang_ingest_frames_total", "kind=video")
    assert lesson.video.sent - 5 <= frames_in <= lesson.video.sent
    # one packet a frame at least, to the full classroom, besides the 180p one's
    assert grew("ketang_forwarded_packets_total", "kind=video") >= frames_in
    assert grew("ketang_ladder_frame_seconds_count") > 10
    assert grew("ketang_join_seconds_count") == 2
    # the recorder keeps every frame that came in (a few may still be queued for its thread)
    ingested = grew("ketang_ingest_bytes_total", "kind=video")
    ingested += grew("ketang_ingest_bytes_total", "kind=audio")
    assert ingested * 0.9 <= grew("ketang_recorder_bytes_total") <= ingested * 1.1
    uplink = samples(text, "ketang_teacher_uplink_bits_per_second")
    # the clip is encoded at 800 kbit/s (plus Opus); libvpx overshoots and undershoots a little
    assert 400_000 <= uplink[f"room={ROOM},source=camera"] <= 1_600_000
    assert samples(text, "process_resident_memory_bytes")[""] > 1e6
    assert samples(text, "ketang_cluster_nodes") == {}  # one process is no cluster
    # a classroom that leaves takes its series with it
    await lesson.low.close()
    await asyncio.sleep(0.2)
    assert "Village" not in await scrape(relay)


def test_the_cluster_node_count_is_there_once_set_and_gone_when_cleared() -> None:
    metrics.set_cluster_nodes(3)
    try:
        assert samples(metrics.exposition().decode(), "ketang_cluster_nodes") == {"": 3.0}
    finally:
        metrics.clear_cluster_nodes()
    assert "ketang_cluster_nodes" not in metrics.exposition().decode()


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def queries() -> Iterator[tuple[str, str, str]]:
    """(where, title, PromQL) of every dashboard panel and alert rule; alert rules give the
    query left of their comparison (the comparison itself holds only when something is wrong)
    and the one right of it when that is a query too (a threshold from the past)."""
    for name, board in DASHBOARDS.items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield name, panel["title"], target["expr"].replace("$room", ".+")
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            query, *threshold = re.split(r"\s(?:==|!=|>=|<=|>|<)\s", rule["expr"])
            yield "alerts.yml", rule["alert"], query
            if threshold and not is_number(threshold[0]):
                yield "alerts.yml", f"{rule['alert']} (threshold)", threshold[0]


@pytest.fixture
def cluster_node() -> Iterator[None]:
    """The relay under test reports a cluster of one node, as a node alone in its directory
    does, so the cluster's queries have data (a single process has no such series)."""
    metrics.set_cluster_nodes(1)
    try:
        yield
    finally:
        metrics.clear_cluster_nodes()


@pytest.fixture
def prometheus(tmp_path: Path, relay: RelayUnderTest) -> Iterator[str]:
    """A real Prometheus scraping the relay every second, with the shipped rules; the relay
    is listed in the node file, as a cluster's nodes are, instead of the static target."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    job = config["scrape_configs"][0]
    job["static_configs"] = []
    (node_file,) = job["file_sd_configs"][0]["files"]
    nodes = [{"targets": [relay.base.removeprefix("http://")]}]
    (tmp_path / node_file).write_text(yaml.safe_dump(nodes))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


async def query(http: aiohttp.ClientSession, prometheus: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{prometheus}/api/v1/query", params={"query": promql}) as reply:
        body = await reply.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@needs_prometheus
@pytest.mark.timeout(120)
async def test_prometheus_evaluates_every_dashboard_and_alert_query_during_a_lesson(
    relay: RelayUnderTest, lesson: Lesson, cluster_node: None, prometheus: str
) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):  # Prometheus up and ten scrapes in
            try:
                if len(await query(http, prometheus, "count_over_time(up[1m]) >= 10")) == 1:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        await report_qoe(relay, lesson.low, "Village", 1.2)  # more frozen time: a rate
        await asyncio.sleep(3)
        values: dict[str, dict[str, Any]] = {}
        empty = []
        for where, title, promql in queries():
            result = await query(http, prometheus, promql)
            if not result or all(r["value"][1] == "NaN" for r in result):
                empty.append((where, title, promql))
            values.setdefault(where, {})[title] = [
                {**r["metric"], "value": r["value"][1]} for r in result
            ]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-values.json").write_text(json.dumps(values, indent=1))
    assert empty == []
    assert values["overview.json"]["Nodes"][0]["value"] == "1"
    # a cluster that kept its one node lost none
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    gone = next(r["expr"] for r in rules if r["alert"] == "KetangRelayNodeGone")
    async with aiohttp.ClientSession() as http:
        assert await query(http, prometheus, gone) == []


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True)


@needs_prometheus
def test_promtool_accepts_the_alert_rules() -> None:
    check = promtool("check", "rules", PROMETHEUS / "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout


@needs_prometheus
def test_the_node_gone_alert_fires_for_a_lost_node_and_not_for_a_restart() -> None:
    check = promtool("test", "rules", Path(__file__).with_name("alerts_test.yml"))
    assert check.returncode == 0, check.stdout + check.stderr


@needs_prometheus
def test_promtool_accepts_the_shipped_config_and_the_node_file_examples(tmp_path: Path) -> None:
    check = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    # the examples in the node file's comments, uncommented, are a valid node file too
    shutil.copytree(PROMETHEUS, tmp_path, dirs_exist_ok=True)
    examples = [
        line.removeprefix("# ").split("  #")[0]
        for line in (PROMETHEUS / "ketang-nodes.yml").read_text().splitlines()
        if line.startswith("# - targets:")
    ]
    assert len(examples) == 2
    (tmp_path / "ketang-nodes.yml").write_text("\n".join(examples) + "\n")
    check = promtool("check", "config", tmp_path / "prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    targets = [t for group in yaml.safe_load("\n".join(examples)) for t in group["targets"]]
    assert len(targets) == 4


def test_dashboards_are_grafana_json_on_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "ketang.yml").read_text()
    )
    assert provisioned["datasources"][0]["uid"] == DATASOURCE["uid"]
    for name, board in DASHBOARDS.items():
        stored = json.loads((OUT / name).read_text())
        assert stored == board, f"{name} is stale: run python -m monitoring.dashboards"
        assert {"uid", "title", "panels", "schemaVersion", "templating", "time"} <= stored.keys()
        ids = [p["id"] for p in stored["panels"]]
        assert len(ids) == len(set(ids))
        for panel in stored["panels"]:
            assert panel["datasource"] == DATASOURCE
            assert all(t["datasource"] == DATASOURCE and t["expr"] for t in panel["targets"])
