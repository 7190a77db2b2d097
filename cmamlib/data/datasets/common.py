"""What the dataset readers share: :class:`Problem`, the layouts, path / list-file helpers,
the parallel image check (:func:`verify_images`).

Conventions: see :mod:`cmamlib.data.readers`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, Union

from ..records import INFRARED, VISIBLE, DatasetError, Record

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
