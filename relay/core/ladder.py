"""The rendition ladder: what a classroom can be sent of one teacher video source.

The teacher's browser sends one encoding (aiortc cannot receive simulcast), forwarded untouched
as the "source" layer. Below it the relay makes renditions of its own, each decoded and encoded
once per room. Two floors end every ladder, one per kind of source: a paused camera sends
nothing, and a screen share that fits nothing else is sent as a still (a few frames per second
at the lowest rendition's size), because slides with no picture at all are worse than slow
slides.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

SOURCE = "source"
PAUSED = "paused"
STILL = "still"
AUDIO_ONLY = "audio"
LOWEST = "low"

_RUNG = re.compile(r"^(\d+)x(\d+)@(\d+)$")


class LadderError(ValueError):
    """A ladder or a cap does not parse; the message is one line for the operator or client."""


@dataclass(frozen=True, slots=True)
class Rendition:
    """One server-made encoding of a teacher video source."""

    name: str  # "360p" for 640x360, or "still"
    width: int
    height: int
    bitrate: int  # bits per second the encoder targets
    fps: float | None = None  # None keeps the teacher's frame rate; the still tier lowers it


@dataclass(frozen=True, slots=True)
class Layer:
    """One step of a classroom's choice for a video slot, best first."""

    name: str
    bitrate: int  # bits per second it needs on the classroom's link


def parse_ladder(text: str, still_fps: float) -> tuple[Rendition, ...]:
    """Renditions from "640x360@500,320x180@150" (kbit/s), highest first, plus the still tier.

    An empty text means no renditions: classrooms get the source or nothing (camera) and the
    screen share's source (no still without an encoder).
    """
    rungs = [r.strip() for r in text.split(",") if r.strip()]
    renditions: list[Rendition] = []
    for rung in rungs:
        match = _RUNG.match(rung)
        if match is None:
            raise LadderError(f"ladder rung {rung!r} is not WIDTHxHEIGHT@KBITS, e.g. 640x360@500")
        width, height, kbits = (int(g) for g in match.groups())
        if not (width and height and kbits) or width % 2 or height % 2:
            raise LadderError(f"ladder rung {rung!r} needs even, non-zero sizes and a bitrate")
        renditions.append(Rendition(f"{height}p", width, height, kbits * 1000))
    _check_order(renditions)
    if renditions:
        low = renditions[-1]
        # a third of the lowest rung's bitrate at a few fps still leaves each frame more bits
        still_bitrate = max(low.bitrate // 3, 30_000)
        renditions.append(Rendition(STILL, low.width, low.height, still_bitrate, still_fps))
    return tuple(renditions)


def _check_order(renditions: list[Rendition]) -> None:
    names = [r.name for r in renditions]
    if len(set(names)) != len(names):
        raise LadderError(f"ladder has two rungs of the same height: {', '.join(names)}")
    for higher, lower in itertools.pairwise(renditions):
        if lower.height >= higher.height or lower.bitrate >= higher.bitrate:
            raise LadderError("ladder rungs must go from highest to lowest size and bitrate")


def layer_names(renditions: tuple[Rendition, ...]) -> tuple[str, ...]:
    """Every name a classroom may use as its cap, best first."""
    names = [SOURCE] + [r.name for r in renditions if r.name != STILL]
    return (*names, LOWEST, AUDIO_ONLY)


def check_cap(cap: str | None, renditions: tuple[Rendition, ...]) -> str | None:
    """The cap a classroom asked for, validated; None means no cap."""
    if cap is None or cap == SOURCE:
        return None
    allowed = layer_names(renditions)
    if cap not in allowed:
        raise LadderError(f"unknown quality cap {cap!r}: use one of {', '.join(allowed)}")
    return cap


def layers(
    source_bitrate: int, renditions: tuple[Rendition, ...], screen: bool, cap: str | None
) -> tuple[Layer, ...]:
    """The layers a video slot may be sent, best first, the floor last, under the cap."""
    made = [Layer(r.name, r.bitrate) for r in renditions if r.name != STILL]
    # a rendition at or above what the teacher sends would cost CPU and bits for no gain
    rungs = [Layer(SOURCE, source_bitrate)] + [r for r in made if r.bitrate < source_bitrate]
    floor = _floor(renditions, screen)
    if cap == AUDIO_ONLY:
        return (Layer(PAUSED, 0),)
    if cap == LOWEST:
        rungs = rungs[-1:]
    elif cap is not None:
        limit = next((r.bitrate for r in made if r.name == cap), source_bitrate)
        rungs = [r for r in rungs if r.bitrate <= limit] or rungs[-1:]
    return (*rungs, floor)


def _floor(renditions: tuple[Rendition, ...], screen: bool) -> Layer:
    """What a slot gets when no rung fits: a still for slides, nothing for the camera."""
    still = next((r for r in renditions if r.name == STILL), None)
    if screen and still is not None:
        return Layer(STILL, still.bitrate)
    return Layer(PAUSED, 0)
