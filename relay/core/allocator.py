"""Which layer each of one classroom's video slots gets, and when that changes.

`allocate` is the static rule: audio is never cut (its bitrate is taken off the top), the
screen share outranks the camera, and when the lowest rungs do not all fit the camera pauses
first, then the screen share drops to its still floor.

`RateController` adds time, as the SFUs studied do (LiveKit's stream allocator, mediasoup's
consumer layers, Jitsi's bitrate controller):

- down at once when the estimator reports congestion;
- up only after the link has looked roomy for `hold` seconds, one step at a time, as a try
  that is kept after `trial` seconds without congestion and reverted at once otherwise;
- after a failed try, wait `backoff` x 1.5^(failures-1) seconds (LiveKit's probe back-off,
  capped) before the next, so a link that cannot carry a layer is not flapped at.

`update` returns its `Decision`: the layers and exactly the changes that call made, which is
what callers react to. The bounded `history` is only the timeline for display.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from relay.core.ladder import Layer

# Layer changes kept per classroom for its displayed timeline: a steady lesson makes a few
# dozen, a constrained one about 256 in 20 minutes, so older ones are dropped (display only).
HISTORY = 256
# Share of the estimate the allocation may plan to use. The estimate already keeps GCC's
# margin (REMB after overuse and the loss bound are both 0.85 x what got through): another
# cut here paused cameras on 400 kbit/s links that carried 180p fine.
USABLE = 1.0


@dataclass(frozen=True, slots=True)
class SlotDemand:
    """One video slot and the layers it may get, best first, its floor last."""

    slot: Hashable
    screen: bool
    layers: tuple[Layer, ...]


@dataclass(frozen=True, slots=True)
class AbrParams:
    """Timing of the rate controller; defaults follow the references in the module doc."""

    hold: float = 3.0  # seconds of room before an upgrade is tried (LiveKit waits ~3 s)
    trial: float = 3.0  # seconds a tried layer must run uncongested to be kept
    backoff: float = 3.0  # LiveKit's probe back-off base; x1.5 per failure
    backoff_max: float = 60.0  # cap, so a link that recovers is retried within a minute
    aftermath: float = 6.0  # seconds a failed try's queue and loss take to clear


@dataclass(frozen=True, slots=True)
class Change:
    """One layer change of one slot, for the timeline, events and metrics."""

    at: float
    slot: Hashable
    layer: str
    reason: str  # start | down | try | keep | revert | cap


@dataclass(frozen=True, slots=True)
class Decision:
    """What one `RateController.update` decided: the layers now and the changes it made."""

    layers: dict[Hashable, str]  # slot -> layer it carries now
    changes: tuple[Change, ...]  # exactly this call's changes, "keep" included, in order


def total(choice: dict[Hashable, str], demands: Sequence[SlotDemand]) -> int:
    """Bits per second the chosen layers need."""
    return sum(_bitrate(d, choice[d.slot]) for d in demands if d.slot in choice)


def allocate(budget: float, demands: Sequence[SlotDemand]) -> dict[Hashable, str]:
    """The best layer per slot within `budget` bits per second, by the rule above."""
    screens_first = sorted(demands, key=lambda d: not d.screen)
    level = {d.slot: max(len(d.layers) - 2, 0) for d in demands}  # lowest rung, or the floor

    def need() -> int:
        return sum(d.layers[level[d.slot]].bitrate for d in demands)

    for demand in reversed(screens_first):  # cameras give up first
        if need() <= budget:
            break
        level[demand.slot] = len(demand.layers) - 1
    for demand in screens_first:  # then the best that fits, screen share first
        while level[demand.slot] > 0 and need() + _step_cost(demand, level) <= budget:
            level[demand.slot] -= 1
    return {d.slot: d.layers[level[d.slot]].name for d in demands}


def _step_cost(demand: SlotDemand, level: dict[Hashable, int]) -> int:
    here = level[demand.slot]
    return demand.layers[here - 1].bitrate - demand.layers[here].bitrate


def _rank(demand: SlotDemand, name: str) -> int:
    """Position of a layer in the slot's list, 0 best; unknown layers rank below all."""
    names = [layer.name for layer in demand.layers]
    return names.index(name) if name in names else len(names)


def _bitrate(demand: SlotDemand, name: str) -> int:
    return next((layer.bitrate for layer in demand.layers if layer.name == name), 0)


@dataclass(slots=True)
class _Trial:
    slot: Hashable
    previous: str
    started: float


class RateController:
    """One classroom's layer per video slot over time: down fast, up by tries."""

    def __init__(self, params: AbrParams) -> None:
        self.params = params
        self.current: dict[Hashable, str] = {}
        # the timeline for display only: bounded, so never a way to find an update's changes
        self.history: deque[Change] = deque(maxlen=HISTORY)
        self.changes_made = 0  # every change so far, including those `history` dropped
        self._made: list[Change] = []  # the changes of the update under way
        self.failures = 0
        self._trial: _Trial | None = None
        self._retry_at = -math.inf
        self._room_since: float | None = None
        # budget known to fit, from the last congestion or kept try: where new slots start
        self._ceiling = math.inf
        self._reverted_at = -math.inf

    @property
    def trying(self) -> Hashable | None:
        """The slot whose upgrade is on trial, if any."""
        return self._trial.slot if self._trial else None

    def update(
        self,
        now: float,
        demands: Sequence[SlotDemand],
        estimate: float | None,
        audio: float,
        congested: bool,
        room: bool,
    ) -> Decision:
        """The layer each slot should carry now, given the estimator's view of the link, and
        the changes that makes: the caller reacts to each exactly once."""
        self._made = []
        budget = math.inf if estimate is None else estimate * USABLE - audio
        self._fit_slots(now, demands)
        if congested:
            self._back_off(now, demands, budget)
        elif self._trial is not None:
            self._judge_trial(now, demands)
        else:
            self._maybe_try(now, demands, budget, room)
        return Decision(dict(self.current), tuple(self._made))

    def _fit_slots(self, now: float, demands: Sequence[SlotDemand]) -> None:
        """New slots start at what is known to fit (the best layer on a link never found
        congested); slots whose layer vanished (a cap, a teacher switch) likewise; gone slots
        are forgotten. An estimate that never saw congestion is not a limit: REMB trails a
        rising send rate by seconds."""
        fit = allocate(self._ceiling, demands)
        slots = {d.slot for d in demands}
        for slot in [s for s in self.current if s not in slots]:
            del self.current[slot]
        for demand in demands:
            known = demand.slot in self.current
            if not known or _rank(demand, self.current[demand.slot]) >= len(demand.layers):
                self._set(now, demand.slot, fit[demand.slot], "cap" if known else "start")
        if self._trial is not None and self._trial.slot not in slots:
            self._trial = None

    def _back_off(self, now: float, demands: Sequence[SlotDemand], budget: float) -> None:
        """Congestion: revert a try, then drop to what the estimate carries."""
        if self._trial is not None:
            self._set(now, self._trial.slot, self._trial.previous, "revert")
            self._trial = None
            self.failures += 1
            wait = self.params.backoff * 1.5 ** (self.failures - 1)
            self._retry_at = now + min(wait, self.params.backoff_max)
            self._reverted_at = now
        self._room_since = None
        if now - self._reverted_at < self.params.aftermath:
            return  # the congestion is the failed try's own: the layer before it was fine
        self._ceiling = budget
        fit = allocate(budget, demands)
        if total(fit, demands) < total(self.current, demands):
            for demand in demands:
                if _rank(demand, fit[demand.slot]) > _rank(demand, self.current[demand.slot]):
                    self._set(now, demand.slot, fit[demand.slot], "down")
            self._retry_at = max(self._retry_at, now + self.params.backoff)

    def _judge_trial(self, now: float, demands: Sequence[SlotDemand]) -> None:
        """An uncongested try becomes the layer after `trial` seconds."""
        assert self._trial is not None
        if now - self._trial.started >= self.params.trial:
            slot = self._trial.slot
            self._ceiling = max(self._ceiling, total(self.current, demands))
            self._record(Change(now, slot, self.current[slot], "keep"))
            self._trial = None
            self.failures = 0
            self._room_since = now

    def _maybe_try(
        self, now: float, demands: Sequence[SlotDemand], budget: float, room: bool
    ) -> None:
        """Step one slot up one layer once there has been room for `hold` seconds."""
        step = self._next_step(demands)
        fit = allocate(budget, demands)
        supported = step is not None and _rank(step, fit[step.slot]) < _rank(
            step, self.current[step.slot]
        )
        if step is None or not (room or supported):
            self._room_since = None
            return
        if self._room_since is None:
            self._room_since = now
        if now - self._room_since < self.params.hold or now < self._retry_at:
            return
        previous = self.current[step.slot]
        better = step.layers[_rank(step, previous) - 1].name
        self._trial = _Trial(step.slot, previous, now)
        self._set(now, step.slot, better, "try")

    def _next_step(self, demands: Sequence[SlotDemand]) -> SlotDemand | None:
        """The slot to improve next: the screen share first, then the camera."""
        for demand in sorted(demands, key=lambda d: not d.screen):
            if _rank(demand, self.current[demand.slot]) > 0:
                return demand
        return None

    def _set(self, now: float, slot: Hashable, layer: str, reason: str) -> None:
        if self.current.get(slot) != layer:
            self.current[slot] = layer
            self._record(Change(now, slot, layer, reason))

    def _record(self, change: Change) -> None:
        """Report the change from this update and keep it on the timeline."""
        self._made.append(change)
        self.history.append(change)
        self.changes_made += 1
