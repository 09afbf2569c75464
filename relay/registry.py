"""The rooms this process serves, created on first use and dropped when empty."""

from __future__ import annotations

from collections.abc import Iterator

from relay.config import MediaConfig
from relay.runtime import EventListener, RoomRuntime


class Registry:
    """Room name → RoomRuntime for this relay process."""

    def __init__(self, media: MediaConfig) -> None:
        self._media = media
        self._rooms: dict[str, RoomRuntime] = {}
        self.listeners: list[EventListener] = []

    def get(self, name: str) -> RoomRuntime:
        """The room's runtime, created if this is its first session."""
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = RoomRuntime(name, self._media, self.listeners, self.release)
        return room

    def find(self, name: str) -> RoomRuntime | None:
        """The room's runtime if it exists, without creating it."""
        return self._rooms.get(name)

    def release(self, name: str) -> None:
        """Forget a room that has no sessions left."""
        room = self._rooms.get(name)
        if room is not None and room.empty:
            del self._rooms[name]

    def __iter__(self) -> Iterator[RoomRuntime]:
        return iter(list(self._rooms.values()))

    async def close(self) -> None:
        """End every session in every room (shutdown)."""
        for room in self:
            await room.close()
        self._rooms.clear()
