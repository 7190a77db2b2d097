"""LLCM (Zhang et al., CVPR 2023): visible / near-infrared list files, camera from the file
name.
"""

from __future__ import annotations

import os
import re
from typing import Callable

from ..records import INFRARED, VISIBLE, DatasetError, Record
from .common import (
    PathLike,
    Problems,
    _check_root,
    _check_split,
    _finish,
    _read_labelled_list,
)

_LLCM_CAM = re.compile(r"_c(\d+)_")


def _llcm_camid(list_file: str) -> Callable[[str, int], int]:
    def camid(rel: str, lineno: int) -> int:
        name = rel.replace("\\", "/").rsplit("/", 1)[-1]
        m = _LLCM_CAM.search(name)
        if m is None:
            raise DatasetError(
                f"{list_file} line {lineno}: expected a file name with a camera field '_cN_' "
                f"(e.g. 0351_c06_s200656_f4830_nir.jpg), got {name!r}"
            )
        return int(m.group(1))

    return camid


def read_llcm(root: PathLike, split: str = "train", *, verify: bool = False, problems: Problems = None) -> list[Record]:
    """Read LLCM (Zhang & Wang, CVPR 2023).

    Layout: ``vis/``, ``nir/`` and ``idx/{train,test}_{vis,nir}.txt`` with lines
    ``nir/0351/0351_c06_s200656_f4830_nir.jpg <label>`` (paths relative to root).

    Args:
        root: the LLCM folder.
        split: ``"train"`` or ``"test"``.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path; pid = list label; camid = N of ``_cN_`` in the file name.

    Raises:
        DatasetError: as :func:`read_regdb`, plus a file name without ``_cN_``.
    """
    _check_split("llcm", split)
    root = _check_root("llcm", root)
    records = []
    for kind, modality in (("vis", VISIBLE), ("nir", INFRARED)):
        list_file = os.path.join(root, "idx", f"{split}_{kind}.txt")
        camid = _llcm_camid(list_file)
        records += _read_labelled_list("llcm", root, list_file, modality, camid, kind, problems=problems)
    return _finish(records, verify, "llcm")
