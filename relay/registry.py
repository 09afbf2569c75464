"""The rooms this process serves, created on first use and dropped when idle."""

from __future__ import annotations

from collections.abc import Iterator

from relay.core.snapshot import RoomSnapshot
from relay.runtime import RoomRuntime, RoomServices


class Registry:
    """Room name → RoomRuntime for this relay process."""

    def __init__(self, services: RoomServices) -> None:
        self.services = services
        self._rooms: dict[str, RoomRuntime] = {}

    def get(self, name: str) -> RoomRuntime:
        """The room's runtime, created if this is its first use."""
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = RoomRuntime(name, self.services, self.release)
        return room

    def find(self, name: str) -> RoomRuntime | None:
        """The room's runtime if it exists, without creating it."""
        return self._rooms.get(name)

    def release(self, name: str) -> None:
        """Forget a room that nothing keeps any more."""
        room = self._rooms.get(name)
        if room is not None and room.idle:
            del self._rooms[name]

    def watch(self, name: str) -> RoomRuntime:
        """A page follows the room's events: keep the room (and what the page told it)."""
        room = self.get(name)
        room.watchers += 1
        return room

    def unwatch(self, name: str) -> None:
        room = self._rooms.get(name)
        if room is not None:
            room.watchers -= 1
            self.release(name)

    def __iter__(self) -> Iterator[RoomRuntime]:
        return iter(list(self._rooms.values()))

    def snapshots(self, now: float) -> list[RoomSnapshot]:
        """Every room with a session or an open lesson, as outsiders read it."""
        return [room.snapshot(now) for room in self if room.active]

    def sweep(self, now: float) -> None:
        """End every room's sessions that never connected in time or went silent."""
        for room in self:
            room.sweep(now)

    def sample_quality(self, now: float) -> None:
        """One quality sample of every live lesson's classrooms."""
        for room in self:
            room.sample_quality(now)

    async def close(self) -> None:
        """End every session and lesson in every room (shutdown)."""
        for room in self:
            await room.close()
        self._rooms.clear()
