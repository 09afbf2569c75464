"""What request handlers share: config sections, the signing secret and the room registry."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from relay.config import Config, MediaConfig
from relay.registry import Registry


@dataclass(frozen=True, slots=True)
class Context:
    """Per-application state, stored on the aiohttp app under CTX."""

    config: Config
    secret: bytes
    registry: Registry

    @property
    def media(self) -> MediaConfig:
        return self.config.media


CTX = web.AppKey("ketang", Context)
