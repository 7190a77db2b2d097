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
"""

from __future__ import annotations

import csv
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, Union

import numpy as np

from .records import INFRARED, MODALITIES, VISIBLE, DatasetError, Record

PathLike = Union[str, "os.PathLike[str]"]


class Problem(NamedTuple):
    """One per-file problem collected by a reader called with ``problems=[]``.

    Attributes:
        path: the offending file (or, for a missing list entry, the image path the
            list names).
        message: what was expected and what was found (names the list file and line
            for list entries).
    """

    path: str
    message: str


Problems = Union[list, None]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File extensions (lower case) accepted as images."""

UNKNOWN_PID = -1
"""``Record.pid`` of images whose identity the dataset does not give (SYSU-MM02 train)."""

_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})

# ----------------------------------------------------------------------------- layouts

SYSU_CAMERAS = (1, 2, 3, 4, 5, 6)
SYSU_VISIBLE_CAMERAS = (1, 2, 4, 5)
SYSU_INFRARED_CAMERAS = (3, 6)
SYSU_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
"""Gallery cameras of the two SYSU-MM01 search modes."""

SYSU_CAMERA_LOCATIONS: Mapping[int, int] = {1: 1, 2: 2, 3: 2, 4: 4, 5: 5, 6: 6}
"""Camera *location* of SYSU-MM01 cameras 1..6 in the dataset authors' evaluation code
(cams 2 and 3 share a room): the official protocol drops gallery entries whose
location equals the query's."""

SYSU_OFFICIAL_FILES = ("exp/rand_perm_cam.mat", "exp/test_id.mat")
"""The files of the SYSU-MM01 authors' own protocol (relative to the dataset root)."""

REGDB_VISIBLE_CAMID = 1
REGDB_THERMAL_CAMID = 2

SYSU_MM02_FILE_CAM_MODALITY: Mapping[int, str] = {1: VISIBLE, 2: INFRARED, 3: INFRARED}
"""Default modality of each *file* camera value of SYSU-MM02 (the authors' stage-2 code:
file cam 1 visible, 2 and 3 infrared; their sampler code disagrees, hence a parameter)."""

# name -> (required folders, required files); used by the readers, detect_layout and
# the "unknown layout" message.  Order = detection order.
_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sysu-mm01": (tuple(f"cam{c}" for c in SYSU_CAMERAS) + ("exp",), ()),
    "sysu-mm02": (("train", "test"), ("train.txt", "test_rgb.txt", "test_ir.txt")),
    "regdb": (("Visible", "Thermal", "idx"), ()),
    "llcm": (("vis", "nir", "idx"), ()),
    "market-1501": (("bounding_box_train", "bounding_box_test", "query"), ()),
    "msmt17": (
        ("train", "test"),
        ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"),
    ),
}
_DISPLAY = {
    "sysu-mm01": "SYSU-MM01",
    "sysu-mm02": "SYSU-MM02",
    "regdb": "RegDB",
    "llcm": "LLCM",
    "market-1501": "Market-1501",
    "msmt17": "MSMT17",
    "list": "list",
}

DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "sysu-mm01": ("train", "test"),
    "sysu-mm02": ("train", "test"),
    "regdb": ("train", "test"),
    "llcm": ("train", "test"),
    "market-1501": ("train", "query", "gallery"),
    "msmt17": ("train", "val", "query", "gallery"),
}
"""Valid ``split`` values of each reader (the list reader takes whatever its file has)."""


# ----------------------------------------------------------------------------- helpers


def _abs(path: PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _show_listing(folder: str, limit: int = 20) -> str:
    """``['a', 'b/', ...]`` (folders with a trailing slash), at most ``limit`` names."""
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in it)
    except OSError as e:
        return f"<cannot list: {e.strerror or e}>"
    shown = repr(names[:limit])
    if len(names) > limit:
        shown += f" (+{len(names) - limit} more)"
    return shown


def _check_split(dataset: str, split: str) -> None:
    valid = DATASET_SPLITS[dataset]
    if split not in valid:
        raise ValueError(f"{_DISPLAY[dataset]}: split must be one of {valid}, got {split!r}")


def _check_root(dataset: str, root: PathLike) -> str:
    """Absolute root after checking it has every folder and file of ``dataset``'s layout."""
    root = _abs(root)
    name = _DISPLAY[dataset]
    if not os.path.isdir(root):
        what = "is a file" if os.path.exists(root) else "does not exist"
        raise DatasetError(f"{name} root {root}: expected a folder, but it {what}")
    dirs, files = _LAYOUTS[dataset]
    missing = [d + "/" for d in dirs if not os.path.isdir(os.path.join(root, d))]
    missing += [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise DatasetError(
            f"{name} root {root}: expected {_describe_layout(dataset)}; missing {missing}; found: {_show_listing(root)}"
        )
    return root


def _describe_layout(dataset: str) -> str:
    dirs, files = _LAYOUTS[dataset]
    if dataset == "sysu-mm01":
        parts = ["folders cam1..cam6/ and exp/"]
    else:
        parts = ["folders " + ", ".join(d + "/" for d in dirs)]
    if files:
        parts.append("files " + ", ".join(files))
    return " and ".join(parts)


def _read_text(path: str, what: str) -> str:
    if not os.path.isfile(path):
        found = "a folder" if os.path.isdir(path) else "nothing"
        raise DatasetError(f"{path}: expected {what}, found {found}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: expected {what} (UTF-8 text), got undecodable bytes ({e})") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read {what}: {e}") from e


def _report(problems: Problems, path: str, message: str) -> None:
    """Raise ``DatasetError(message)``, or append it to ``problems`` when collecting."""
    if problems is None:
        raise DatasetError(message)
    problems.append(Problem(path, message))


def _list_images(folder: str, dataset: str, problems: Problems = None) -> list[str]:
    """Sorted absolute paths of the images directly inside ``folder``.

    Raises:
        DatasetError: ``folder`` holds a non-image entry (file or sub-folder), unless
            ``problems`` collects it (the entry is then skipped).
    """
    out = []
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise DatasetError(f"{_DISPLAY[dataset]}: cannot list image folder {folder}: {e}") from e
    for entry in entries:
        if _is_ignored(entry.name):
            continue
        path = os.path.join(folder, entry.name)
        if entry.is_dir():
            _report(
                problems,
                path,
                f"{_DISPLAY[dataset]}: {path}: expected only image files "
                f"({', '.join(IMAGE_EXTENSIONS)}) in image folder {folder}, found a sub-folder",
            )
            continue
        if not _is_image_name(entry.name):
            _report(
                problems,
                path,
                f"{_DISPLAY[dataset]}: {path}: expected an image file "
                f"({', '.join(IMAGE_EXTENSIONS)}) in image folder {folder}, found a non-image file",
            )
            continue
        out.append(path)
    out.sort()
    return out


class _DirIndex:
    """Existence checks of many files, one ``scandir`` per parent folder."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str] | None] = {}

    def exists(self, path: str) -> bool:
        parent, name = os.path.split(path)
        if parent not in self._names:
            try:
                with os.scandir(parent) as it:
                    self._names[parent] = frozenset(e.name for e in it)
            except OSError:
                self._names[parent] = None
        names = self._names[parent]
        return names is not None and name in names


def _read_fields(list_file: str, n_fields: int, fmt: str, what: str) -> list[tuple[int, list[str]]]:
    """``(line_number, fields)`` of every non-blank line of a whitespace-separated list.

    Args:
        list_file: absolute path of the list.
        n_fields: expected number of whitespace-separated fields a line.
        fmt: human description of a line, e.g. ``"<relative/path> <label>"``.
        what: description of the file for the "missing/empty" messages.
    """
    text = _read_text(list_file, what)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != n_fields:
            raise DatasetError(
                f"{list_file} line {lineno}: expected '{fmt}' ({n_fields} space-separated "
                f"fields), got {len(fields)} fields: {line[:120]!r}"
            )
        rows.append((lineno, fields))
    if not rows:
        raise DatasetError(f"{list_file}: empty {what}, expected lines '{fmt}'")
    return rows


def _parse_int(value: str, list_file: str, lineno: int, field: str, line_fmt: str) -> int:
    if not re.fullmatch(r"-?\d+", value):
        raise DatasetError(f"{list_file} line {lineno}: expected an integer {field} in '{line_fmt}', got {value!r}")
    return int(value)


class _Resolver:
    """Turns list-relative image paths into checked absolute paths.

    Collects missing images so one error names the first and counts the others.
    """

    def __init__(self, dataset: str, list_file: str, bases: Sequence[str]):
        self.dataset = dataset
        self.list_file = list_file
        self.bases = list(bases)
        self.index = _DirIndex()
        self.missing: list[tuple[int, str]] = []

    def __call__(self, rel: str, lineno: int) -> str:
        rel_norm = rel.replace("\\", "/")
        if not _is_image_name(rel_norm):
            raise DatasetError(
                f"{self.list_file} line {lineno}: expected an image path ({', '.join(IMAGE_EXTENSIONS)}), got {rel!r}"
            )
        candidates = [os.path.normpath(os.path.join(b, rel_norm)) for b in self.bases]
        for cand in candidates:
            if self.index.exists(cand):
                return cand
        self.missing.append((lineno, candidates[0]))
        return candidates[0]

    def raise_missing(self, problems: Problems = None) -> set[str]:
        """Raise on missing images; when ``problems`` collects, append every one of them
        and return their paths (the caller drops those records)."""
        if not self.missing:
            return set()
        if problems is not None:
            for lineno, path in self.missing:
                problems.append(
                    Problem(path, f"{self.list_file} line {lineno}: referenced image {path} does not exist")
                )
            return {path for _, path in self.missing}
        lineno, path = self.missing[0]
        more = len(self.missing) - 1
        extra = f" (and {more} more missing images listed in this file)" if more else ""
        raise DatasetError(f"{self.list_file} line {lineno}: referenced image {path} does not exist{extra}")


def _finish(records: list[Record], verify: bool, dataset: str, workers: int | None = None) -> list[Record]:
    records.sort()
    if verify:
        failures = verify_images(records, workers=workers, desc=f"verify {_DISPLAY[dataset]}")
        if failures:
            shown = "; ".join(f"{p}: {err}" for p, err in failures[:5])
            more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
            raise DatasetError(
                f"{_DISPLAY[dataset]}: expected decodable image files, {len(failures)} of "
                f"{len(records)} are not: {shown}{more}"
            )
    return records


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


# ----------------------------------------------------------------------------- list-file readers


def _read_labelled_list(
    dataset: str,
    root: str,
    list_file: str,
    modality: str,
    camid: int | Callable[[str, int], int],
    top_folder: str | None,
    bases: Sequence[str] | None = None,
    problems: Problems = None,
) -> list[Record]:
    """Records of a ``relative/path label`` list (RegDB, LLCM, MSMT17)."""
    fmt = "<relative/path> <label>"
    rows = _read_fields(list_file, 2, fmt, f"{_DISPLAY[dataset]} list file")
    resolve = _Resolver(dataset, list_file, bases or [root])
    records = []
    for lineno, (rel, label) in rows:
        pid = _parse_int(label, list_file, lineno, "label", fmt)
        if top_folder is not None and rel.replace("\\", "/").split("/")[0] != top_folder:
            raise DatasetError(
                f"{list_file} line {lineno}: expected a {modality} image path under {top_folder}/, got {rel!r}"
            )
        path = resolve(rel, lineno)
        try:
            cam = camid(rel, lineno) if callable(camid) else camid
        except DatasetError as e:
            if problems is None:
                raise
            problems.append(Problem(path, str(e)))
            continue
        records.append(Record(path, pid, cam, modality))
    missing = resolve.raise_missing(problems)
    return [r for r in records if r.path not in missing]


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


# ----------------------------------------------------------------------------- generic list

_LIST_REQUIRED = ("path", "pid", "camid", "modality")
_LIST_COLUMNS = _LIST_REQUIRED + ("split",)


def read_list(
    csv_path: PathLike,
    split: str | None = None,
    *,
    verify: bool = False,
    problems: Problems = None,
) -> list[Record]:
    """Read a generic CSV/TSV image list with header ``path,pid,camid,modality[,split]``.

    Columns may come in any order; ``path`` is relative to the list's folder (absolute
    paths are kept), ``modality`` is ``visible`` or ``infrared``.  The delimiter is a tab
    for ``.tsv`` files or when the header holds a tab, a comma otherwise.

    Args:
        csv_path: the list file.
        split: keep only rows whose ``split`` column equals it (the file must have one);
            ``None`` keeps every row.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path.

    Raises:
        DatasetError: missing or empty file, wrong header, a row with the wrong number
            of fields or a bad value (naming file and line), no row of ``split``, a
            missing image.
    """
    list_file = _abs(csv_path)
    text = _read_text(list_file, "a CSV/TSV list with header path,pid,camid,modality[,split]")
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise DatasetError(f"{list_file}: empty list file, expected a header path,pid,camid,modality[,split] and rows")
    delimiter = "\t" if list_file.lower().endswith(".tsv") or "\t" in lines[first] else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    base = os.path.dirname(list_file)
    resolve = _Resolver("list", list_file, [base])
    records = []
    splits_seen: set[str] = set()
    n_rows = 0
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            if (
                not set(_LIST_REQUIRED) <= set(header)
                or not set(header) <= set(_LIST_COLUMNS)
                or len(set(header)) != len(header)
            ):
                raise DatasetError(
                    f"{list_file} line {lineno}: expected a header with columns "
                    f"path,pid,camid,modality[,split] ({'tab' if delimiter == chr(9) else 'comma'}-"
                    f"separated), got {row}"
                )
            col = {c: header.index(c) for c in header}
            if split is not None and "split" not in col:
                raise DatasetError(
                    f"{list_file}: split={split!r} requested, expected a 'split' column, found columns {header}"
                )
            continue
        if len(row) != len(header):
            raise DatasetError(
                f"{list_file} line {lineno}: expected {len(header)} fields ({','.join(header)}), got {len(row)}: {row}"
            )
        n_rows += 1
        cells = [c.strip() for c in row]
        if "split" in col:
            splits_seen.add(cells[col["split"]])
            if split is not None and cells[col["split"]] != split:
                continue
        fmt = ",".join(header)
        pid = _parse_int(cells[col["pid"]], list_file, lineno, "pid", fmt)
        camid = _parse_int(cells[col["camid"]], list_file, lineno, "camid", fmt)
        modality = cells[col["modality"]].lower()
        if modality not in MODALITIES:
            raise DatasetError(
                f"{list_file} line {lineno}: expected modality in {MODALITIES}, got {cells[col['modality']]!r}"
            )
        records.append(Record(resolve(cells[col["path"]], lineno), pid, camid, modality))
    if header is None or n_rows == 0:
        raise DatasetError(f"{list_file}: expected at least one row after the header, found none")
    if split is not None and not records:
        raise DatasetError(f"{list_file}: expected rows with split={split!r}, found splits {sorted(splits_seen)}")
    missing = resolve.raise_missing(problems)
    records = [r for r in records if r.path not in missing]
    return _finish(records, verify, "list")


# ----------------------------------------------------------------------------- image checks


def _decode_error(path: str) -> str | None:
    """``None`` when ``path`` fully decodes with PIL, else ``"ErrorType: message"``.

    Note: a truncated image decodes "successfully" if some code has set
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` process-wide.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                return f"empty image ({im.width}x{im.height})"
    except Exception as e:  # noqa: BLE001 - every failure is reported, none escapes
        return f"{type(e).__name__}: {e}"
    return None


def verify_images(
    records: Iterable[Record | PathLike],
    workers: int | None = None,
    *,
    progress: bool = True,
    desc: str = "verify images",
) -> list[tuple[str, str]]:
    """Fully decode every image (PIL) in parallel threads and return the failures.

    Args:
        records: records (or plain paths) to check.
        workers: decoding threads; default ``min(16, 2 * cpu_count)``.
        progress: show a tqdm progress bar.
        desc: progress bar label.

    Returns:
        ``[(path, error), ...]`` for every image that is missing, not an image,
        truncated or otherwise undecodable, in input order; empty when all decode.
    """
    paths = [r.path if isinstance(r, Record) else os.fspath(r) for r in records]
    if workers is None:
        workers = min(16, 2 * (os.cpu_count() or 1))
    workers = max(1, int(workers))
    if workers == 1 or len(paths) <= 1:
        results = list(_progress(map(_decode_error, paths), len(paths), progress, desc))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:

            def batched() -> Iterator[str | None]:
                # bounded number of pending futures, whatever the dataset size
                step = 64 * workers
                for start in range(0, len(paths), step):
                    yield from pool.map(_decode_error, paths[start : start + step])

            results = list(_progress(batched(), len(paths), progress, desc))
    return [(p, err) for p, err in zip(paths, results) if err is not None]


def _progress(it: Iterable, total: int, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", leave=False)


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
