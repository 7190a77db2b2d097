"""SYSU-MM02 (the CMAM authors' dataset): the three list files of their code, file camera
value to modality as a parameter checked against the test lists.
"""

from __future__ import annotations

import os
from typing import Mapping

from ..records import INFRARED, MODALITIES, VISIBLE, DatasetError, Record
from .common import (
    SYSU_MM02_FILE_CAM_MODALITY,
    UNKNOWN_PID,
    PathLike,
    Problems,
    _check_root,
    _check_split,
    _finish,
    _parse_int,
    _read_fields,
    _Resolver,
)


def read_sysu_mm02(
    root: PathLike,
    split: str = "train",
    *,
    file_cam_modality: Mapping[int, str] | None = None,
    verify: bool = False,
    problems: Problems = None,
) -> list[Record]:
    """Read SYSU-MM02 (Wu, Lin & Zheng, IEEE TCSVT 2024) as the authors' code reads it.

    Layout: ``train/``, ``test/`` and the lists ``train.txt``, ``test_rgb.txt``,
    ``test_ir.txt`` at the root, lines ``<relative/path> <pid> <cam>`` (paths relative
    to root).  ``camid = cam - 1`` (the authors' convention).  Training pids are
    placeholders and are not read: train records get ``pid = UNKNOWN_PID`` (-1).

    Args:
        root: the SYSU-MM02 folder.
        split: ``"train"`` (7,440 visible + 13,614 infrared) or ``"test"`` (118 ids,
            2,360 visible from ``test_rgb.txt`` = query + 2,360 infrared from
            ``test_ir.txt`` = gallery).
        file_cam_modality: modality of each *file* camera value; default
            :data:`SYSU_MM02_FILE_CAM_MODALITY` ``{1: visible, 2: infrared, 3: infrared}``.
            It gives the modality of training lines and is checked against the test
            lists.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path.

    Raises:
        DatasetError: missing folder or list, empty list, a line that is not
            ``path pid cam``, a camera value not in ``file_cam_modality``, a test list
            whose camera contradicts its modality, a missing image.
    """
    _check_split("sysu-mm02", split)
    mapping = dict(SYSU_MM02_FILE_CAM_MODALITY if file_cam_modality is None else file_cam_modality)
    bad = {k: v for k, v in mapping.items() if v not in MODALITIES}
    if bad:
        raise ValueError(f"SYSU-MM02: file_cam_modality values must be in {MODALITIES}, got {bad}")
    root = _check_root("sysu-mm02", root)
    fmt = "<relative/path> <pid> <cam>"
    lists = [("train.txt", None)] if split == "train" else [("test_rgb.txt", VISIBLE), ("test_ir.txt", INFRARED)]
    records = []
    for name, list_modality in lists:
        list_file = os.path.join(root, name)
        rows = _read_fields(list_file, 3, fmt, "SYSU-MM02 list file")
        resolve = _Resolver("sysu-mm02", list_file, [root])
        for lineno, (rel, pid_field, cam_field) in rows:
            cam = _parse_int(cam_field, list_file, lineno, "cam", fmt)
            if cam not in mapping:
                raise DatasetError(
                    f"{list_file} line {lineno}: expected a camera value in "
                    f"{sorted(mapping)} (file_cam_modality), got {cam}"
                )
            modality = mapping[cam]
            if list_modality is None:
                pid = UNKNOWN_PID
            else:
                pid = _parse_int(pid_field, list_file, lineno, "pid", fmt)
                if modality != list_modality:
                    raise DatasetError(
                        f"{list_file} line {lineno}: expected a camera of modality "
                        f"{list_modality!r} (file values "
                        f"{sorted(c for c, m in mapping.items() if m == list_modality)} per "
                        f"file_cam_modality), got cam {cam} ({modality})"
                    )
            records.append(Record(resolve(rel, lineno), pid, cam - 1, modality))
        missing = resolve.raise_missing(problems)
        if missing:
            records = [r for r in records if r.path not in missing]
    return _finish(records, verify, "sysu-mm02")
