"""SYSU-MM01 (Wu et al., ICCV 2017): the reader, the query / gallery split of the test ids, and the
files of the dataset authors' own evaluation protocol (``exp/*.mat``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..records import INFRARED, VISIBLE, DatasetError, Record
from .common import (
    SYSU_CAMERAS,
    SYSU_GALLERY_CAMERAS,
    SYSU_INFRARED_CAMERAS,
    SYSU_OFFICIAL_FILES,
    PathLike,
    Problems,
    _abs,
    _check_root,
    _check_split,
    _finish,
    _list_images,
    _read_text,
    _show_listing,
)

# ----------------------------------------------------------------------------- SYSU-MM01


def _read_id_file(path: str) -> list[int]:
    """Ids of a SYSU-MM01 ``exp/*_id.txt``: one line of comma-separated integers."""
    fmt = "one line of comma-separated integer ids, e.g. '1,2,4'"
    text = _read_text(path, f"an id file ({fmt})")
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise DatasetError(f"{path}: empty id file, expected {fmt}")
    if len(lines) > 1:
        lineno, line = lines[1]
        raise DatasetError(f"{path}: expected {fmt}, found {len(lines)} non-empty lines (line {lineno}: {line[:80]!r})")
    lineno, line = lines[0]
    tokens = [t.strip() for t in line.split(",")]
    if len(tokens) > 1 and tokens[-1] == "":  # tolerate one trailing comma
        tokens.pop()
    if not all(re.fullmatch(r"\d+", t) for t in tokens):
        raise DatasetError(f"{path} line {lineno}: expected comma-separated integers, got {line[:80]!r}")
    ids = [int(t) for t in tokens]
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise DatasetError(f"{path} line {lineno}: expected distinct ids, id {i} is listed twice")
        seen.add(i)
    return ids


def sysu_mm01_split_ids(root: PathLike) -> dict[str, list[int]]:
    """The sorted ids of the SYSU-MM01 ``train`` (train + val) and ``test`` splits.

    Args:
        root: the SYSU-MM01 folder (holding ``exp/``).

    Returns:
        ``{"train": [...395 ids], "test": [...96 ids]}`` on the real dataset.

    Raises:
        DatasetError: an id file is missing, empty or malformed, or a test id is also a
            train/val id.
    """
    root = _abs(root)
    exp = os.path.join(root, "exp")
    train = _read_id_file(os.path.join(exp, "train_id.txt"))
    val = _read_id_file(os.path.join(exp, "val_id.txt"))
    test = _read_id_file(os.path.join(exp, "test_id.txt"))
    overlap = sorted(set(train) & set(val))
    if overlap:
        raise DatasetError(f"{exp}: expected disjoint train_id.txt and val_id.txt, both list ids {overlap[:10]}")
    overlap = sorted(set(train + val) & set(test))
    if overlap:
        raise DatasetError(
            f"{exp}: expected test_id.txt disjoint from train_id.txt + val_id.txt, both list ids {overlap[:10]}"
        )
    return {"train": sorted(train + val), "test": sorted(test)}


def read_sysu_mm01(
    root: PathLike, split: str = "train", *, verify: bool = False, problems: Problems = None
) -> list[Record]:
    """Read SYSU-MM01 (Wu et al., ICCV 2017) as distributed.

    Layout: ``cam1..cam6/PPPP/NNNN.jpg`` (cams 1, 2, 4, 5 visible; 3, 6 near-infrared)
    and ``exp/{train,val,test}_id.txt``.  Not every camera has a folder for every id;
    an id with no folder in any camera is an error.

    Args:
        root: the SYSU-MM01 folder.
        split: ``"train"`` (ids of train_id.txt + val_id.txt, 395 ids, 22,258 visible +
            11,909 infrared images) or ``"test"`` (test_id.txt, 96 ids), all six cameras.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path; pid = SYSU id, camid = 1..6.

    Raises:
        DatasetError: missing folder or id file, malformed id file, an id without any
            image folder, an empty visible test folder (the seeded gallery sampling
            would have nothing to choose from), a non-image file, an unreadable image.
    """
    _check_split("sysu-mm01", split)
    root = _check_root("sysu-mm01", root)
    ids = sysu_mm01_split_ids(root)[split]
    id_file = "exp/test_id.txt" if split == "test" else "exp/train_id.txt + exp/val_id.txt"
    folders = {}
    for cam in SYSU_CAMERAS:
        cam_dir = os.path.join(root, f"cam{cam}")
        with os.scandir(cam_dir) as it:
            folders[cam] = {e.name for e in it if e.is_dir()}
    records: list[Record] = []
    orphans = []
    for pid in ids:
        name = f"{pid:04d}"
        found = False
        for cam in SYSU_CAMERAS:
            if name not in folders[cam]:
                continue
            found = True
            folder = os.path.join(root, f"cam{cam}", name)
            modality = INFRARED if cam in SYSU_INFRARED_CAMERAS else VISIBLE
            paths = _list_images(folder, "sysu-mm01", problems)
            if not paths and split == "test" and modality == VISIBLE:
                raise DatasetError(
                    f"SYSU-MM01: {folder}: expected at least one image in a visible test "
                    f"folder (the gallery draws one per existing cam/id folder), found none"
                )
            records.extend(Record(p, pid, cam, modality) for p in paths)
        if not found:
            orphans.append(pid)
    if orphans:
        raise DatasetError(
            f"SYSU-MM01 root {root}: ids {orphans[:10]}{' ...' if len(orphans) > 10 else ''} "
            f"of {id_file} ({len(orphans)} ids) have no folder camC/PPPP (e.g. "
            f"cam1/{orphans[0]:04d}) in any of cam1..cam6"
        )
    return _finish(records, verify, "sysu-mm01")


def sysu_query_gallery(
    root_or_test_records: PathLike | Sequence[Record], mode: str = "all"
) -> tuple[list[Record], list[Record]]:
    """SYSU-MM01 query and gallery *candidates* of the baseline protocol.

    Query: every infrared image (cam3, cam6) of the test ids (both modes).  Gallery
    candidates: every visible image of the test ids in the mode's gallery cameras (all:
    1, 2, 4, 5; indoor: 1, 2).  The per-trial seeded sampling of one (or ten) images per
    (id, camera) is done by ``cmamlib.evaluation`` from these candidates; within a
    (pid, camid) group the candidates are in sorted file order, as the protocol needs.

    Args:
        root_or_test_records: the SYSU-MM01 folder, or the records of
            ``read_sysu_mm01(root, "test")``.
        mode: ``"all"`` or ``"indoor"``.

    Returns:
        ``(query, gallery_candidates)``, each sorted by path.
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"SYSU-MM01 search mode must be one of {tuple(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    if isinstance(root_or_test_records, (str, os.PathLike)):
        records = read_sysu_mm01(root_or_test_records, "test")
    else:
        records = sorted(root_or_test_records)
    cams = SYSU_GALLERY_CAMERAS[mode]
    query = [r for r in records if r.modality == INFRARED and r.camid in SYSU_INFRARED_CAMERAS]
    gallery = [r for r in records if r.modality == VISIBLE and r.camid in cams]
    return query, gallery


# ----------------------------------------------------------------------------- SYSU-MM01 official


@dataclass(frozen=True)
class SysuOfficialSplit:
    """The SYSU-MM01 authors' own evaluation split (``exp/rand_perm_cam.mat``,
    ``exp/test_id.mat``), as read by :func:`read_sysu_mm01_official`.

    Attributes:
        root: absolute dataset root.
        test_ids: test identities in ``test_id.mat`` order (SYSU ids, 1-based).
        rand_perm: ``(cam, pid) -> (num_trials, n)`` int64 permutations of ``1..n`` (1-based,
            as in the file), one row per trial, ``n`` = images of that camera and id in
            sorted file order. Only non-empty entries are kept.
        num_trials: rows of every permutation matrix (10 in the real file).
    """

    root: str
    test_ids: tuple[int, ...]
    rand_perm: Mapping[tuple[int, int], np.ndarray]
    num_trials: int


def _missing_official(root: str, path: str) -> DatasetError:
    return DatasetError(
        f"SYSU-MM01 root {root}: protocol='official' needs {', '.join(SYSU_OFFICIAL_FILES)} "
        f"(shipped in the dataset's exp/ folder); expected {path}, found nothing there "
        f"(exp/ holds {_show_listing(os.path.join(root, 'exp'))}). Copy the files from the "
        f"original SYSU-MM01 archive, or use protocol='baseline'"
    )


def _loadmat(path: str, key: str, what: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a dataset error
        raise DatasetError(f"{path}: expected a MATLAB .mat file with {what}, cannot read it: {e}") from e
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path}: expected a variable {key!r} ({what}), found variables {found}")
    return mat[key]


def read_sysu_mm01_official(root: PathLike) -> SysuOfficialSplit:
    """Read the SYSU-MM01 authors' evaluation files (docs/protocols.md, second mode).

    ``exp/rand_perm_cam.mat`` holds ``rand_perm_cam``, a 6 x 1 MATLAB cell (one per
    camera) of cells indexed by identity (``{cam}{pid}``, 1-based), each a
    ``trials x n`` matrix whose rows are random permutations of ``1..n`` (the images of
    that camera and id, in file order), empty where the id has no image in the camera;
    ``exp/test_id.mat`` holds ``id``, the test identities. Read with
    ``scipy.io.loadmat`` as the authors' Python evaluation does
    (``mat["rand_perm_cam"][cam - 1][0].squeeze()[pid - 1][trial]``).

    Args:
        root: the SYSU-MM01 folder.

    Returns:
        :class:`SysuOfficialSplit`.

    Raises:
        DatasetError: a file is missing (the message says which, what ``exp/`` holds and
            that ``protocol="baseline"`` needs neither), unreadable, without the expected
            variable, or with a row that is not a permutation of ``1..n``.
    """
    root = _abs(root)
    if not os.path.isdir(root):
        raise DatasetError(f"SYSU-MM01 root {root}: expected a folder, found nothing")
    perm_path, id_path = (os.path.join(root, *f.split("/")) for f in SYSU_OFFICIAL_FILES)
    for path in (perm_path, id_path):
        if not os.path.isfile(path):
            raise _missing_official(root, path)
    ids = np.asarray(_loadmat(id_path, "id", "the test identities"))
    if ids.size == 0 or not np.issubdtype(ids.dtype, np.number) or np.any(ids != np.round(ids)):
        raise DatasetError(f"{id_path}: expected 'id' to be a vector of integer ids, got {ids.dtype} {ids.shape}")
    test_ids = tuple(int(i) for i in ids.reshape(-1))
    if len(set(test_ids)) != len(test_ids):
        raise DatasetError(f"{id_path}: expected distinct test ids, found repeated ones")

    cells = _loadmat(perm_path, "rand_perm_cam", "a 6 x 1 cell of per-id permutation cells")
    what = "'rand_perm_cam' to be a cell with one entry per camera 1..6"
    if cells.dtype != object or cells.size != len(SYSU_CAMERAS):
        raise DatasetError(f"{perm_path}: expected {what}, got {cells.dtype} array of shape {cells.shape}")
    cells = cells.reshape(-1)
    rand_perm: dict[tuple[int, int], np.ndarray] = {}
    trials: set[int] = set()
    for cam in SYSU_CAMERAS:
        per_id = np.asarray(cells[cam - 1])
        if per_id.dtype != object:
            raise DatasetError(
                f"{perm_path}: expected rand_perm_cam{{{cam}}} to be a cell of per-id matrices, "
                f"got a {per_id.dtype} array of shape {per_id.shape}"
            )
        for i, entry in enumerate(per_id.reshape(-1)):
            arr = np.asarray(entry)
            if arr.size == 0:
                continue
            pid = i + 1
            if arr.ndim == 1:  # one image: saved as a column (trials x 1)
                arr = arr[:, None]
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
                raise DatasetError(
                    f"{perm_path}: rand_perm_cam{{{cam}}}{{{pid}}}: expected a trials x n numeric "
                    f"matrix, got {arr.dtype} of shape {arr.shape}"
                )
            n = arr.shape[1]
            perm = arr.astype(np.int64)
            expect = np.arange(1, n + 1)
            bad = [t for t in range(arr.shape[0]) if not np.array_equal(np.sort(perm[t]), expect)]
            if bad or np.any(perm != arr):
                t = bad[0] if bad else 0
                raise DatasetError(
                    f"{perm_path}: rand_perm_cam{{{cam}}}{{{pid}}} row {t + 1}: expected a "
                    f"permutation of 1..{n}, got {arr[t][:10].tolist()}"
                )
            rand_perm[(cam, pid)] = perm
            trials.add(arr.shape[0])
    if not rand_perm:
        raise DatasetError(f"{perm_path}: expected {what} holding permutations, every entry is empty")
    return SysuOfficialSplit(root, test_ids, rand_perm, min(trials))
