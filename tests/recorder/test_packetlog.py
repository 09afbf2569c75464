"""The packet log survives a crash: a torn last record is dropped, everything before it read."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.packetlog import MAGIC, PacketLogWriter, Record, read_log


def written(path: Path, count: int) -> list[Record]:
    writer = PacketLogWriter(path)
    records = [
        Record(n // 5, n * 0.1, n * 3000, n % 5 == 0, bytes([n]) * (n + 1)) for n in range(count)
    ]
    for record in records:
        writer.append(record)
    writer.close()
    return records


def test_records_come_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "camera-video.log"
    assert list(read_log(path)) if path.exists() else True
    records = written(path, 12)
    assert list(read_log(path)) == records


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_torn_last_record_is_dropped(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "log"
    records = written(path, 10)
    path.write_bytes(path.read_bytes()[:-cut])  # the process died in the middle of a write
    assert list(read_log(path)) == records[:-1]


def test_appending_after_a_restart_continues_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log"
    first = written(path, 3)
    second = written(path, 2)
    assert path.read_bytes().count(MAGIC) == 1
    assert list(read_log(path)) == first + second


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a Ketang packet log"):
        list(read_log(path))
