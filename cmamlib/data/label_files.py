"""Source pseudo-label files: labels produced by another unsupervised method, read once.

The authors of CMAM did not cluster the source themselves: stage 1 reads pseudo labels
that an unsupervised re-ID method (PPLR) produced on Market-1501 (docs/method.md, "What the
authors' released code does"). :class:`cmamlib.training.cmam.CMAMConfig.label_file`
points stage 1 at such a file instead of re-clustering every epoch.

Format: a CSV file with a header row ``path,label`` and one row per source image.
``path`` is the image's file name or its path relative to the dataset root (a record
matches when its path ends with ``/`` + ``path``, or equals it); ``label`` is an
integer, ``-1`` for noise (not trained on). Labels need not be contiguous: they are
renumbered ``0..K-1`` in order of first appearance. Every source image needs a row.

    path,label
    bounding_box_train/0002_c1s1_000451_03.jpg,17
    0002_c1s1_000551_01.jpg,17
    0007_c2s3_070952_01.jpg,-1
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..clustering import _renumber
from .records import Record


def read_label_file(path: str | Path, records: Sequence[Record]) -> np.ndarray:
    """Pseudo labels ``(N,)`` int64 of ``records`` from a ``path,label`` CSV file.

    Args:
        path: the CSV file (format in the module docstring).
        records: the source images, in training order.

    Returns:
        labels ``(N,)``: ``0..K-1``, ``-1`` for noise, aligned with ``records``.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: a bad header or label, a path that matches no image or several,
            an image listed twice, or images without a row (counts and examples named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path}: no such file")
    by_name: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_name.setdefault(Path(r.path).name, []).append(i)
    raw = np.full(len(records), np.iinfo(np.int64).min, dtype=np.int64)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["path", "label"]:
            raise ValueError(f"label file {path}: expected the header 'path,label', got {header!r}")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"label file {path}, line {line}: expected 'path,label', got {row!r}")
            key, value = row[0].strip().replace("\\", "/"), row[1].strip()
            try:
                label = int(value)
            except ValueError:
                raise ValueError(f"label file {path}, line {line}: label {value!r} is not an integer") from None
            if label < -1:
                raise ValueError(f"label file {path}, line {line}: label {label} (expected >= 0, or -1 for noise)")
            hits = [i for i in by_name.get(Path(key).name, []) if _matches(records[i].path, key)]
            if not hits:
                raise ValueError(f"label file {path}, line {line}: {key!r} matches no source image")
            if len(hits) > 1:
                raise ValueError(
                    f"label file {path}, line {line}: {key!r} matches {len(hits)} source images "
                    f"(e.g. {records[hits[0]].path}); give the path relative to the dataset root"
                )
            if raw[hits[0]] != np.iinfo(np.int64).min:
                raise ValueError(f"label file {path}, line {line}: {key!r} is listed twice")
            raw[hits[0]] = label
    missing = np.flatnonzero(raw == np.iinfo(np.int64).min)
    if missing.size:
        examples = ", ".join(records[i].path for i in missing[:3])
        raise ValueError(
            f"label file {path}: {missing.size} of {len(records)} source images have no row (e.g. {examples})"
        )
    return _renumber(raw)  # 0..K-1 in order of first appearance


def write_label_file(
    path: str | Path, records: Sequence[Record], labels: Sequence[int] | np.ndarray, root: str | Path | None = None
) -> Path:
    """Write ``labels`` ``(N,)`` of ``records`` as a ``path,label`` CSV; returns the path.

    ``root``: paths relative to this folder (e.g. ``bounding_box_train/0002_c1s1_000451_03.jpg``
    with the dataset root, so that equal file names in two splits stay apart); None: file
    names only."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(records),):
        raise ValueError(f"write_label_file: {labels.shape[0] if labels.ndim else 0} labels for {len(records)} records")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r, y in zip(records, labels):
            key = Path(r.path).name if root is None else Path(os.path.relpath(r.path, root)).as_posix()
            w.writerow([key, int(y)])
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (identifies the label set a run trained on)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _matches(record_path: str, key: str) -> bool:
    p = record_path.replace("\\", "/")
    return p == key or p.endswith("/" + key)
