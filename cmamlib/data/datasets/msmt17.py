"""MSMT17 (Wei et al., CVPR 2018), a visible-only source: list files, camera from the file
name.
"""

from __future__ import annotations

import os
from typing import Callable

from ..records import VISIBLE, DatasetError, Record
from .common import (
    PathLike,
    Problems,
    _check_root,
    _check_split,
    _finish,
    _read_labelled_list,
)


def _msmt17_camid(list_file: str) -> Callable[[str, int], int]:
    def camid(rel: str, lineno: int) -> int:
        name = rel.replace("\\", "/").rsplit("/", 1)[-1]
        parts = name.split("_")
        if len(parts) < 4 or not parts[2].isdigit():
            raise DatasetError(
                f"{list_file} line {lineno}: expected a file name 'PPPP_NNN_CC_...' with the "
                f"camera as third field (e.g. 0000_000_01_0303morning_0015_0.jpg), got {name!r}"
            )
        return int(parts[2])

    return camid


def read_msmt17(
    root: PathLike, split: str = "train", *, verify: bool = False, problems: Problems = None
) -> list[Record]:
    """Read MSMT17 (V1; Wei et al., CVPR 2018), a visible-only source dataset.

    Layout: ``train/``, ``test/``, ``list_{train,val,query,gallery}.txt`` with lines
    ``<relative/path> <pid>``; train/val paths are relative to ``train/`` and
    query/gallery paths to ``test/`` (as torchreid reads them; root-relative paths
    ``train/...`` are accepted too).

    Args:
        root: the MSMT17 folder.
        split: ``"train"``, ``"val"``, ``"query"`` or ``"gallery"``.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path; pid from the list; camid = third ``_`` field of the file
        name (1..15); modality visible.
    """
    _check_split("msmt17", split)
    root = _check_root("msmt17", root)
    base = os.path.join(root, "train" if split in ("train", "val") else "test")
    list_file = os.path.join(root, f"list_{split}.txt")
    records = _read_labelled_list(
        "msmt17",
        root,
        list_file,
        VISIBLE,
        _msmt17_camid(list_file),
        None,
        bases=[base, root],
        problems=problems,
    )
    return _finish(records, verify, "msmt17")
