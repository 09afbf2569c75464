"""Real `ketang serve --redis-url` processes for cluster tests, and how to talk to them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import tokens
from tests.conftest import free_port

ROOT = Path(__file__).parents[2]
SECRET = "cluster-test-secret-" + "x" * 32


@dataclass
class Node:
    """One relay process of the cluster."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as reply:
            result: dict[str, Any] = json.load(reply)
            return result

    def kill(self) -> None:
        """kill -9: no goodbye to the directory or the peers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def token(room: str, role: str, name: str) -> str:
    return tokens.issue(SECRET.encode(), room, role, name, 3600)


async def start_node(
    tmp_path: Path,
    redis_url: str,
    name: str,
    env: dict[str, str] | None = None,
    public: bool = False,
) -> Node:
    """A node on a free port, ready when its /healthz answers; `public`: classrooms may be
    sent to it directly (its public_node_url is its own address)."""
    port = free_port()
    settings = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    settings |= {"KETANG_SECRET": SECRET, "KETANG_RECORD": "false", **(env or {})}
    if public:
        settings["KETANG_PUBLIC_NODE_URL"] = f"http://127.0.0.1:{port}"
    data = tmp_path / name
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--udp-port", "0"]
    command += ["--data-dir", str(data), "--redis-url", redis_url]
    data.mkdir(parents=True, exist_ok=True)
    log = data / "relay.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=settings, stdout=out, stderr=out)
    node = Node(name, port, process, log)
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"node {name} exited: {log.read_text()[-2000:]}")
        try:
            await asyncio.to_thread(node.health)
            return node
        except OSError:
            await asyncio.sleep(0.1)
    node.stop()
    raise TimeoutError(f"node {name} did not answer /healthz")
