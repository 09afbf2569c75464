"""A relay on a cloud VM behind 1:1 NAT, and a classroom behind its school's NAT: with
`public_ip` set the classroom plays; without it, it cannot, which proves the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import netns
from tests.e2e.cloud import fps_after, lesson_in_vm, token
from tests.e2e.processes import start_classroom

ROOM = "cloud"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("advertised", [True, False], ids=["public_ip", "without"])
async def test_a_classroom_reaches_a_relay_behind_1to1_nat_only_by_its_public_ip(
    nat: netns.CloudNat, tmp_path: Path, advertised: bool
) -> None:
    flags = ["--public-ip", nat.public_ip] if advertised else []
    async with lesson_in_vm(nat, tmp_path, ROOM, {}, flags) as base:
        classroom = await start_classroom(
            f"{base}/whep/{ROOM}", token(ROOM, "classroom", "Mountain School"),
            nat.command(nat.school, []),
        )  # fmt: skip
        try:
            fps = await fps_after(classroom, 8)
            assert classroom.ready.is_set()  # signalling went through the public address
            if advertised:
                assert fps >= 25, f"{fps:.1f} fps through the NAT"
            else:
                assert classroom.video == []  # its candidates are private: nothing gets through
        finally:
            await classroom.stop()
