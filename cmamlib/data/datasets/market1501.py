"""Market-1501 (Zheng et al., ICCV 2015), a visible-only source: ``PPPP_cCsS_FFFFFF_NN.jpg``
file names in three folders.
"""

from __future__ import annotations

import os
import re

from ..records import VISIBLE, Record
from .common import (
    PathLike,
    Problems,
    _check_root,
    _check_split,
    _finish,
    _list_images,
    _report,
)

# ----------------------------------------------------------------------------- Market-1501

_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
_MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_market1501(
    root: PathLike, split: str = "train", *, verify: bool = False, problems: Problems = None
) -> list[Record]:
    """Read Market-1501 (Zheng et al., ICCV 2015), a visible-only source dataset.

    Layout: ``bounding_box_train/``, ``bounding_box_test/``, ``query/`` holding
    ``PPPP_cCsS_FFFFFF_NN.jpg``.  pid -1 (junk) is dropped everywhere; pid 0
    (distractor) is kept only in the gallery.

    Args:
        root: the Market-1501 folder.
        split: ``"train"`` (bounding_box_train), ``"query"`` or ``"gallery"``
            (bounding_box_test).
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path; camid = C; modality visible.

    Raises:
        DatasetError: missing folder, a file not named ``PPPP_cCsS_FFFFFF_NN.jpg``.
    """
    _check_split("market-1501", split)
    root = _check_root("market-1501", root)
    folder = os.path.join(root, _MARKET_DIRS[split])
    records = []
    for path in _list_images(folder, "market-1501", problems):
        name = os.path.basename(path)
        m = _MARKET_NAME.match(name)
        if m is None:
            _report(
                problems,
                path,
                f"Market-1501: {path}: expected a file name PPPP_cCsS_FFFFFF_NN.jpg "
                f"(e.g. 0002_c1s1_000451_03.jpg), got {name!r}",
            )
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1 or (pid == 0 and split != "gallery"):
            continue
        records.append(Record(path, pid, cam, VISIBLE))
    return _finish(records, verify, "market-1501")
