"""Protocol constants shared by the evaluation modules."""

from __future__ import annotations

#: The two SYSU-MM01 protocols of :func:`~cmamlib.evaluation.evaluate_sysu` (docs/protocols.md).
SYSU_PROTOCOLS: tuple[str, ...] = ("baseline", "official")

#: Visible gallery cameras of the SYSU-MM01 search modes (1-based camera ids).
SYSU_GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}

#: Ranks reported by :class:`~cmamlib.evaluation.EvalResult`.
REPORTED_RANKS: tuple[int, ...] = (1, 5, 10, 20)
