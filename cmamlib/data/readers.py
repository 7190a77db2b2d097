"""Dataset readers: one function a dataset, each returning sorted :class:`Record` lists.

Every reader accepts the dataset exactly as its authors distribute it (see
``docs/protocols.md``) and raises :class:`DatasetError` on anything else, naming the
offending path, what was expected and what was found.

Conventions shared by all readers:

* ``Record.path`` is an absolute path string (``os.path.abspath``, symlinks kept).
* ``Record.pid`` is the dataset's own integer id (no relabelling; see :func:`relabel`).
* ``Record.camid`` is the camera as numbered by the dataset, 1-based (SYSU-MM01
  ``cam3`` -> 3, Market-1501 ``c3`` -> 3, MSMT17 ``_03_`` -> 3, LLCM ``_c03_`` -> 3);
  RegDB has visible camid 1 and thermal camid 2; SYSU-MM02 follows its authors' code,
  ``camid = file value - 1``.
* Record lists are sorted by path (then pid, camid, modality), so they are
  deterministic whatever the file-system listing order.
* Image folders may contain only image files (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``,
  any case); hidden files (``.DS_Store``...) and the Windows thumbnails ``Thumbs.db`` /
  ``desktop.ini`` (which Market-1501 ships) are ignored, anything else is an error.
* ``verify=True`` decodes every image (:func:`verify_images`) and raises on the first
  unreadable ones; the default ``False`` only lists and stats, which is fast on the
  real datasets.
* ``problems=[]`` (a list the caller owns) switches the *per-file* errors to collection:
  a missing list entry, a non-image file in an image folder, a file name the layout
  does not allow (Market-1501), a file name without a parsable camera (LLCM, MSMT17)
  is appended as a :class:`Problem` ``(path, message)`` and that file is skipped
  instead of raising; structural errors (missing folder or list, malformed line,
  contradicting camera) still raise. ``python -m cmamlib check-data`` uses it to list
  every broken file at once.

Layouts read (the synthetic benchmark writes the same):

=============  ====================================================================
name           layout under ``root``
=============  ====================================================================
sysu-mm01      ``cam1..cam6/PPPP/*.jpg``, ``exp/{train,val,test}_id.txt``
sysu-mm02      ``train/``, ``test/``, ``train.txt``, ``test_rgb.txt``, ``test_ir.txt``
regdb          ``Visible/``, ``Thermal/``, ``idx/{train,test}_{visible,thermal}_{i}.txt``
llcm           ``vis/``, ``nir/``, ``idx/{train,test}_{vis,nir}.txt``
market-1501    ``bounding_box_train/``, ``bounding_box_test/``, ``query/``
msmt17         ``train/``, ``test/``, ``list_{train,val,query,gallery}.txt``
list           a CSV/TSV file ``path,pid,camid,modality[,split]``
=============  ====================================================================

Each reader lives in its own module of :mod:`cmamlib.data.datasets` (``sysu_mm01``,
``sysu_mm02``, ``regdb``, ``llcm``, ``market1501``, ``msmt17``, ``csv_list``; what they
share in ``common``); this module is the registry (:data:`READERS`, :func:`read_dataset`,
:func:`detect_layout`) and re-exports every name of them.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Sequence

import numpy as np

from .datasets.common import (  # noqa: F401
    _DISPLAY,
    _IGNORED_NAMES,
    _LAYOUTS,
    DATASET_SPLITS,
    IMAGE_EXTENSIONS,
    REGDB_THERMAL_CAMID,
    REGDB_VISIBLE_CAMID,
    SYSU_CAMERA_LOCATIONS,
    SYSU_CAMERAS,
    SYSU_GALLERY_CAMERAS,
    SYSU_INFRARED_CAMERAS,
    SYSU_MM02_FILE_CAM_MODALITY,
    SYSU_OFFICIAL_FILES,
    SYSU_VISIBLE_CAMERAS,
    UNKNOWN_PID,
    PathLike,
    Problem,
    Problems,
    _abs,
    _check_root,
    _check_split,
    _decode_error,
    _describe_layout,
    _DirIndex,
    _finish,
    _is_ignored,
    _is_image_name,
    _list_images,
    _parse_int,
    _progress,
    _read_fields,
    _read_labelled_list,
    _read_text,
    _report,
    _Resolver,
    _show_listing,
    verify_images,
)
from .datasets.csv_list import (  # noqa: F401
    _LIST_COLUMNS,
    _LIST_REQUIRED,
    read_list,
)
from .datasets.llcm import (  # noqa: F401
    _LLCM_CAM,
    _llcm_camid,
    read_llcm,
)
from .datasets.market1501 import (  # noqa: F401
    _MARKET_DIRS,
    _MARKET_NAME,
    read_market1501,
)
from .datasets.msmt17 import (  # noqa: F401
    _msmt17_camid,
    read_msmt17,
)
from .datasets.regdb import (  # noqa: F401
    read_regdb,
)
from .datasets.sysu_mm01 import (  # noqa: F401
    SysuOfficialSplit,
    _loadmat,
    _missing_official,
    _read_id_file,
    read_sysu_mm01,
    read_sysu_mm01_official,
    sysu_mm01_split_ids,
    sysu_query_gallery,
)
from .datasets.sysu_mm02 import (  # noqa: F401
    read_sysu_mm02,
)
from .records import INFRARED, MODALITIES, VISIBLE, DatasetError, Record  # noqa: F401

# ----------------------------------------------------------------------------- registry


def detect_layout(root: PathLike) -> str | None:
    """The name of the dataset layout found at ``root``, or ``None``.

    A ``.csv``/``.tsv`` file is ``"list"``; a folder is the first layout of
    :data:`READERS` whose required folders and files it holds.
    """
    root = _abs(root)
    if os.path.isfile(root):
        return "list" if root.lower().endswith((".csv", ".tsv")) else None
    if not os.path.isdir(root):
        return None
    for name, (dirs, files) in _LAYOUTS.items():
        if all(os.path.isdir(os.path.join(root, d)) for d in dirs) and all(
            os.path.isfile(os.path.join(root, f)) for f in files
        ):
            return name
    return None


def _unknown_layout(root: str) -> DatasetError:
    needs = "; ".join(f"{_DISPLAY[n]}: {_describe_layout(n)}" for n in _LAYOUTS)
    hint = ""
    if os.path.isdir(root):
        found = _show_listing(root)
        try:
            subs = sorted(e.path for e in os.scandir(root) if e.is_dir())
        except OSError:
            subs = []
        matches = [f"{s} ({detect_layout(s)})" for s in subs[:200] if detect_layout(s)]
        if matches:
            hint = f"; did you mean {', '.join(matches[:5])}?"
    else:
        found = "a file" if os.path.exists(root) else "nothing (path does not exist)"
    return DatasetError(
        f"unknown layout at {root}: expected one of {needs}; or a .csv/.tsv list file; found: {found}{hint}"
    )


READERS: dict[str, Callable[..., list[Record]]] = {
    "sysu-mm01": read_sysu_mm01,
    "sysu-mm02": read_sysu_mm02,
    "regdb": read_regdb,
    "llcm": read_llcm,
    "market-1501": read_market1501,
    "msmt17": read_msmt17,
    "list": read_list,
}
"""Reader of each dataset name (``read_dataset`` also accepts ``market1501``, ``SYSU_MM01``...)."""


def _canonical_name(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for canonical in READERS:
        if re.sub(r"[^a-z0-9]", "", canonical) == key:
            return canonical
    raise ValueError(f"unknown dataset name {name!r}: expected 'auto' or one of {sorted(READERS)}")


def read_dataset(name: str, root: PathLike, split: str | None = None, **kwargs: object) -> list[Record]:
    """Read a dataset by name (``"auto"``: :func:`detect_layout`), for CLIs and configs.

    Args:
        name: a key of :data:`READERS` (case, ``-`` and ``_`` ignored) or ``"auto"``.
        root: dataset folder (list file for ``"list"``).
        split: the reader's split; required except for ``"list"``.
        **kwargs: passed to the reader (``trial=`` for RegDB, ``verify=``...).

    Raises:
        DatasetError: ``"auto"`` and no known layout at ``root`` (the message says what
            each layout needs), or any reader error.
        ValueError: unknown name, missing split, RegDB without ``trial``.
    """
    if name.lower() == "auto":
        detected = detect_layout(root)
        if detected is None:
            raise _unknown_layout(_abs(root))
        name = detected
    else:
        name = _canonical_name(name)
    reader = READERS[name]
    if name == "list":
        return reader(root, split, **kwargs)
    if split is None:
        raise ValueError(f"{_DISPLAY[name]}: a split is required, one of {DATASET_SPLITS[name]}")
    if name == "regdb" and "trial" not in kwargs:
        raise ValueError("RegDB: pass trial=1..10 (the train/test split index)")
    return reader(root, split=split, **kwargs)


# ----------------------------------------------------------------------------- small helpers


def relabel(pids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Map ids to contiguous labels ``0..K-1`` in increasing id order.

    Args:
        pids: (N,) integer ids.

    Returns:
        (N,) int64 labels; equal ids get equal labels, smaller ids smaller labels.
    """
    arr = np.asarray(pids, dtype=np.int64).reshape(-1)
    _, inverse = np.unique(arr, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def summarize(records: Sequence[Record]) -> dict[str, object]:
    """Counts for reports and ``check-data``: images and ids, per modality and camera.

    Returns:
        ``{"images", "ids", "visible_images", "infrared_images", "visible_ids",
        "infrared_ids", "cameras": {camid: images}}`` (ids excluding ``UNKNOWN_PID``).
    """
    vis = [r for r in records if r.modality == VISIBLE]
    ir = [r for r in records if r.modality == INFRARED]

    def n_ids(rs: Sequence[Record]) -> int:
        return len({r.pid for r in rs if r.pid != UNKNOWN_PID})

    cams: dict[int, int] = {}
    for r in records:
        cams[r.camid] = cams.get(r.camid, 0) + 1
    return {
        "images": len(records),
        "ids": n_ids(records),
        "visible_images": len(vis),
        "infrared_images": len(ir),
        "visible_ids": n_ids(vis),
        "infrared_ids": n_ids(ir),
        "cameras": dict(sorted(cams.items())),
    }


__all__ = [
    "DATASET_SPLITS",
    "IMAGE_EXTENSIONS",
    "Problem",
    "READERS",
    "SYSU_CAMERA_LOCATIONS",
    "SYSU_GALLERY_CAMERAS",
    "SYSU_OFFICIAL_FILES",
    "SYSU_MM02_FILE_CAM_MODALITY",
    "UNKNOWN_PID",
    "detect_layout",
    "read_dataset",
    "read_list",
    "read_llcm",
    "read_market1501",
    "read_msmt17",
    "read_regdb",
    "read_sysu_mm01",
    "read_sysu_mm01_official",
    "read_sysu_mm02",
    "relabel",
    "SysuOfficialSplit",
    "summarize",
    "sysu_mm01_split_ids",
    "sysu_query_gallery",
    "verify_images",
]
