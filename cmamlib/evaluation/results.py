"""The result of a protocol run: per-trial metrics, their mean and std."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constants import REPORTED_RANKS


@dataclass
class EvalResult:
    """Metrics of one protocol over its trials (or RegDB splits).

    Attributes:
        protocol: e.g. ``"sysu/all"``, ``"regdb/visible_to_thermal"``.
        cmc: per trial, the CMC curve (fractions in [0, 1]).
        mAP: per trial, mean average precision (fraction).
        mINP: per trial, mean inverse negative penalty (fraction).
        info: free-form JSON-serialisable details (shot, number of queries...).
    """

    protocol: str
    cmc: list[list[float]] = field(default_factory=list)
    mAP: list[float] = field(default_factory=list)
    mINP: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add_trial(self, cmc: np.ndarray, mAP: float, mINP: float) -> None:
        """Append one trial's ``(cmc, mAP, mINP)`` as returned by the ``eval_*`` functions."""
        self.cmc.append([float(v) for v in np.asarray(cmc).reshape(-1)])
        self.mAP.append(float(mAP))
        self.mINP.append(float(mINP))

    @property
    def num_trials(self) -> int:
        return len(self.mAP)

    def rank(self, k: int) -> list[float]:
        """Per-trial rank-k accuracy; beyond a short curve (small gallery) its last value."""
        return [c[min(k, len(c)) - 1] for c in self.cmc]

    def per_trial(self) -> list[dict[str, float]]:
        rows = []
        for t in range(self.num_trials):
            row = {f"R{k}": self.rank(k)[t] for k in REPORTED_RANKS}
            row.update(mAP=self.mAP[t], mINP=self.mINP[t])
            rows.append(row)
        return rows

    def _stat(self, fn) -> dict[str, float]:
        rows = self.per_trial()
        if not rows:
            return {}
        return {k: float(fn([r[k] for r in rows])) for k in rows[0]}

    @property
    def mean(self) -> dict[str, float]:
        """Mean over trials of R1, R5, R10, R20, mAP, mINP (fractions)."""
        return self._stat(np.mean)

    @property
    def std(self) -> dict[str, float]:
        """Population standard deviation over trials (``np.std``, ddof 0)."""
        return self._stat(np.std)

    @property
    def r1(self) -> float:
        return self.mean["R1"]

    @property
    def map(self) -> float:
        return self.mean["mAP"]

    @property
    def minp(self) -> float:
        return self.mean["mINP"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: mean, std, per-trial rows, mean CMC curve."""
        cmc_mean = (
            np.mean(np.asarray(self.cmc), axis=0).tolist() if self.cmc and len({len(c) for c in self.cmc}) == 1 else []
        )
        return {
            "protocol": self.protocol,
            "num_trials": self.num_trials,
            "mean": self.mean,
            "std": self.std,
            "per_trial": self.per_trial(),
            "cmc_mean": [float(v) for v in cmc_mean],
            "info": dict(self.info),
        }

    def summary(self) -> str:
        m = self.mean
        return (
            f"{self.protocol}: R1 {m['R1']:.2%} R5 {m['R5']:.2%} R10 {m['R10']:.2%} R20 {m['R20']:.2%} "
            f"mAP {m['mAP']:.2%} mINP {m['mINP']:.2%} ({self.num_trials} trials)"
        )
