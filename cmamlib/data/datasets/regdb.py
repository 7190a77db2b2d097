"""RegDB (Nguyen et al., Sensors 2017): paired visible / thermal images and the standard 10
train / test splits of ``idx/``.
"""

from __future__ import annotations

import os

import numpy as np

from ..records import INFRARED, VISIBLE, Record
from .common import (
    REGDB_THERMAL_CAMID,
    REGDB_VISIBLE_CAMID,
    PathLike,
    Problems,
    _check_root,
    _check_split,
    _finish,
    _read_labelled_list,
)


def read_regdb(
    root: PathLike,
    trial: int,
    split: str = "train",
    *,
    verify: bool = False,
    problems: Problems = None,
) -> list[Record]:
    """Read RegDB (Nguyen et al., Sensors 2017) with the standard 10 train/test splits.

    Layout: ``Visible/``, ``Thermal/`` and ``idx/{train,test}_{visible,thermal}_{i}.txt``
    (i = 1..10) with lines ``Visible/<id>/<file>.bmp <label>`` (paths relative to root).

    Args:
        root: the RegDB folder.
        trial: split index, 1..10.
        split: ``"train"`` or ``"test"`` (206 ids, 2,060 visible + 2,060 thermal each).
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path; pid = list label; camid 1 (visible) or 2 (thermal).

    Raises:
        DatasetError: missing folder or list, empty list, a line that is not
            ``path label``, a path outside the modality's folder, a missing image.
    """
    _check_split("regdb", split)
    if not isinstance(trial, (int, np.integer)) or not 1 <= int(trial) <= 10:
        raise ValueError(f"RegDB: trial must be an integer in 1..10, got {trial!r}")
    root = _check_root("regdb", root)
    records = []
    for kind, folder, modality, camid in (
        ("visible", "Visible", VISIBLE, REGDB_VISIBLE_CAMID),
        ("thermal", "Thermal", INFRARED, REGDB_THERMAL_CAMID),
    ):
        list_file = os.path.join(root, "idx", f"{split}_{kind}_{int(trial)}.txt")
        records += _read_labelled_list("regdb", root, list_file, modality, camid, folder, problems=problems)
    return _finish(records, verify, "regdb")
