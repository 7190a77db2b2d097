"""The record type every reader returns (torchreid-style ``(path, pid, camid)`` + modality)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

VISIBLE = "visible"
INFRARED = "infrared"
MODALITIES = (VISIBLE, INFRARED)


class DatasetError(ValueError):
    """A dataset tree or list file does not have the expected layout.

    The message names the offending path, what was expected and what was found.
    """


class Record(NamedTuple):
    """One image of a dataset.

    Attributes:
        path: absolute (or reader-root-relative resolved) path of the image file.
        pid: identity label as distributed by the dataset (used for evaluation and
            diagnostics only, never for unsupervised training).
        camid: camera id as numbered by the dataset (1-based for SYSU-MM01 and
            Market-1501, so SYSU protocols can test ``camid == 3``).
        modality: ``"visible"`` or ``"infrared"``.
    """

    path: str
    pid: int
    camid: int
    modality: str


def record_arrays(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pids, camids, is_infrared)`` as int64/int64/bool arrays of length N."""
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    cams = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    ir = np.fromiter((r.modality == INFRARED for r in records), dtype=bool, count=len(records))
    return pids, cams, ir
