"""Each lesson's quality per classroom, kept with the lesson after Prometheus forgets it.

During a lesson the recorder samples every classroom every SAMPLE_SECONDS (`LessonQuality`);
at its end the summary goes into the lesson's meta and into `<data-dir>/quality/<id>.json`,
which `ketang report` reads (monitoring/report.py). Pure: no I/O, time is passed in.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

SAMPLE_SECONDS = 5.0
# A lesson was poor for a classroom if any of these held (ITU-T G.1070-style thresholds a
# bureau can read: loss that breaks pictures, freezes a class notices, a link under 360p).
POOR_LOSS = 0.05
POOR_FREEZE_RATIO = 0.02
POOR_BANDWIDTH = 300_000


@dataclass(frozen=True, slots=True)
class QualitySample:
    """One classroom at one moment."""

    estimate: float  # bits per second
    loss: float  # 0..1
    layer: str | None  # of its main video slot
    freeze_seconds: float  # the page's cumulative frozen time (0 without reports)


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else 0.0


class LessonQuality:
    """The samples of every classroom of one lesson."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.samples: dict[str, list[QualitySample]] = defaultdict(list)

    def add(self, classroom: str, sample: QualitySample) -> None:
        self.samples[classroom].append(sample)

    def summary(self) -> list[dict[str, Any]]:
        """Per classroom: attended minutes, bandwidth median and 5th percentile, mean loss,
        freeze ratio, minutes per layer, and whether the lesson was poor for it."""
        return [self._one(name, samples) for name, samples in sorted(self.samples.items())]

    def _one(self, classroom: str, samples: list[QualitySample]) -> dict[str, Any]:
        seconds = len(samples) * self.interval
        known = [s.estimate for s in samples if s.estimate > 0]
        frozen = max(s.freeze_seconds for s in samples) - min(s.freeze_seconds for s in samples)
        layers = Counter(s.layer for s in samples if s.layer is not None)
        summary = {
            "classroom": classroom,
            "attended_minutes": round(seconds / 60, 2),
            "bandwidth_p50": round(statistics.median(known)) if known else 0,
            "bandwidth_p5": round(percentile(known, 0.05)),
            "loss": round(statistics.fmean(s.loss for s in samples), 4),
            "freeze_ratio": round(frozen / seconds, 4) if seconds else 0.0,
            "renditions": {k: round(v * self.interval / 60, 2) for k, v in layers.most_common()},
        }
        summary["poor"] = is_poor(summary)
        return summary


def is_poor(summary: dict[str, Any]) -> bool:
    """A classroom's lesson was poor: loss, freezes or a link too thin for a readable picture."""
    thin = 0 < summary["bandwidth_p50"] < POOR_BANDWIDTH
    return bool(summary["loss"] > POOR_LOSS or summary["freeze_ratio"] > POOR_FREEZE_RATIO or thin)
