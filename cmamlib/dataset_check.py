"""The dataset checker of ``python -m cmamlib check-data DATASET ROOT``.

:func:`check_data` reads a dataset tree with the real reader (:mod:`cmamlib.data.readers`),
decodes every image in parallel threads and compares the ids and images per split and
modality with the published counts of the real dataset (:data:`PUBLISHED_COUNTS`);
:func:`format_report` prints the table, every difference flagged and every problem (an
unreadable, mis-named or missing file) listed, the first :data:`MAX_LISTED` then a count.
Heavy imports (the readers, numpy) happen inside the functions, so that the command line
starts fast.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["CHECK_DATASETS", "PUBLISHED_COUNTS", "CheckReport", "check_data", "format_report"]

#: Dataset names of ``check-data`` (``market-1501`` is accepted for ``market1501``).
CHECK_DATASETS = ("sysu-mm01", "sysu-mm02", "regdb", "llcm", "market1501", "msmt17", "list")

#: Published counts of the real datasets (dataset papers / the issue): split ->
#: ``{"ids", "visible", "infrared"}``; a missing key means no published figure is used.
PUBLISHED_COUNTS: dict[str, dict[str, dict[str, int]]] = {
    "sysu-mm01": {
        "train": {"ids": 395, "visible": 22258, "infrared": 11909},
        "test": {"ids": 96, "infrared": 3803},  # infrared test images = the queries
    },
    "sysu-mm02": {
        "train": {"visible": 7440, "infrared": 13614},  # training ids are not given
        "test": {"ids": 118, "visible": 2360, "infrared": 2360},
    },
    "regdb": {
        "train (trial 1)": {"ids": 206, "visible": 2060, "infrared": 2060},
        "test (trial 1)": {"ids": 206, "visible": 2060, "infrared": 2060},
        "all trials": {"ids": 412, "visible": 4120, "infrared": 4120},
    },
    "llcm": {  # Zhang & Wang, CVPR 2023 (DEEN), Sec. 4.2
        "train": {"ids": 713, "visible": 16946, "infrared": 13975},
        "test": {"ids": 351, "visible": 8680, "infrared": 7166},
    },
    "market-1501": {
        "train": {"ids": 751, "visible": 12936, "infrared": 0},
        "query": {"visible": 3368, "infrared": 0},
        "gallery": {"visible": 15913, "infrared": 0},  # distractors (pid 0) in, junk out
    },
    "msmt17": {
        "train+val": {"ids": 1041, "visible": 32621, "infrared": 0},
        "query": {"visible": 11659, "infrared": 0},
        "gallery": {"visible": 82161, "infrared": 0},
    },
}

#: Footnotes printed under the table of a dataset.
FOOTNOTES: dict[str, str] = {
    "sysu-mm01": "test infrared = the queries of both search modes; train = train_id.txt + val_id.txt",
    "sysu-mm02": "training lists give no identities (n/a); test visible = queries, test infrared = gallery",
    "regdb": "the 10 trials are all read; 'all trials' is their union",
    "market-1501": "junk (pid -1) dropped, distractors (pid 0) kept in the gallery, as torchreid",
    "msmt17": "published train = list_train + list_val",
    "llcm": "published: 46,767 images of 1,064 ids in all (the train + test figures above sum to 44,830)",
}

MAX_LISTED = 20
"""Problems printed in full; the rest are counted."""

_SYSU_NAME = re.compile(r"^\d{4}\.jpg$")
_SYSU_ID_FOLDER = re.compile(r"^\d{4}$")


# ----------------------------------------------------------------------------- check-data


@dataclass
class CheckReport:
    """What ``check-data`` found.

    Attributes:
        dataset: canonical reader name (``"sysu-mm01"``...).
        root: absolute dataset root (list file for ``"list"``).
        rows: ``[(split label, {"ids", "visible", "infrared"})]``; ``ids`` is None where
            the dataset gives no identities (SYSU-MM02 training images).
        published: split label -> published counts (subset of the keys of a row).
        differences: ``[(split label, column, found, published)]``.
        problems: ``[(path, message)]``: unreadable, mis-named or non-image files,
            missing list entries, official-protocol files that disagree with the tree.
        fatal: a layout error that stopped the reading (message), or None.
        images: number of distinct image files decoded.
        notes: informational lines (e.g. the SYSU-MM01 official-protocol files).
    """

    dataset: str
    root: str
    rows: list[tuple[str, dict]] = field(default_factory=list)
    published: dict[str, dict[str, int]] = field(default_factory=dict)
    differences: list[tuple[str, str, int | None, int]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    fatal: str | None = None
    images: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Readable: no fatal error and no problem (count differences allowed)."""
        return self.fatal is None and not self.problems

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "images": self.images,
            "rows": [{"split": s, **c} for s, c in self.rows],
            "published": self.published,
            "differences": [{"split": s, "column": c, "found": f, "published": p} for s, c, f, p in self.differences],
            "problems": [{"path": p, "message": m} for p, m in self.problems],
            "fatal": self.fatal,
            "notes": self.notes,
        }


def _counts(records: Sequence) -> dict:
    from .data.readers import UNKNOWN_PID, summarize

    s = summarize(records)
    known = any(r.pid != UNKNOWN_PID for r in records)
    return {
        "ids": s["ids"] if known or not records else None,
        "visible": s["visible_images"],
        "infrared": s["infrared_images"],
    }


def _list_splits(csv_path: str) -> list[str] | None:
    """Split values of a generic list file, or None when it has no ``split`` column."""
    with open(csv_path, encoding="utf-8-sig") as f:
        text = f.read()
    delimiter = "\t" if csv_path.lower().endswith(".tsv") or "\t" in text.split("\n", 1)[0] else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        return None
    header = [c.strip().lower() for c in rows[0]]
    if "split" not in header:
        return None
    col = header.index("split")
    return sorted({r[col].strip() for r in rows[1:] if len(r) > col})


def _read_splits(dataset: str, root: str, problems: list) -> list[tuple[str, list]]:
    """``[(split label, records)]`` read by the real readers, collecting per-file problems."""
    from .data import readers as R

    if dataset == "sysu-mm01":
        return [(s, R.read_sysu_mm01(root, s, problems=problems)) for s in ("train", "test")]
    if dataset == "sysu-mm02":
        return [(s, R.read_sysu_mm02(root, s, problems=problems)) for s in ("train", "test")]
    if dataset == "llcm":
        return [(s, R.read_llcm(root, s, problems=problems)) for s in ("train", "test")]
    if dataset == "market-1501":
        return [(s, R.read_market1501(root, s, problems=problems)) for s in ("train", "query", "gallery")]
    if dataset == "msmt17":
        parts = {s: R.read_msmt17(root, s, problems=problems) for s in ("train", "val", "query", "gallery")}
        return [
            ("train", parts["train"]),
            ("val", parts["val"]),
            ("train+val", parts["train"] + parts["val"]),
            ("query", parts["query"]),
            ("gallery", parts["gallery"]),
        ]
    if dataset == "regdb":
        out, union = [], {}
        for trial in range(1, 11):
            for s in ("train", "test"):
                recs = R.read_regdb(root, trial, s, problems=problems)
                union.update((r.path, r) for r in recs)
                if trial == 1:
                    out.append((f"{s} (trial 1)", recs))
        out.append(("all trials", sorted(union.values())))
        return out
    if dataset == "list":
        splits = _list_splits(root)
        if not splits:
            return [("all", R.read_list(root, None, problems=problems))]
        return [(s, R.read_list(root, s, problems=problems)) for s in splits]
    raise ValueError(f"check-data: unknown dataset {dataset!r}; expected one of {CHECK_DATASETS}")


def _sysu_names(root: str, problems: list) -> None:
    """SYSU-MM01 as distributed: ``camC/`` holds 4-digit id folders of ``NNNN.jpg`` files."""
    for cam in range(1, 7):
        cam_dir = os.path.join(root, f"cam{cam}")
        with os.scandir(cam_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            if not (e.is_dir() and _SYSU_ID_FOLDER.match(e.name)):
                kind = "folder" if e.is_dir() else "file"
                problems.append(
                    (
                        e.path,
                        f"SYSU-MM01: {e.path}: expected only 4-digit id folders (e.g. 0001) "
                        f"in {cam_dir}, found a {kind} {e.name!r}",
                    )
                )
                continue
            with os.scandir(e.path) as it2:
                for f in sorted(it2, key=lambda x: x.name):
                    low = f.name.lower()
                    if f.name.startswith(".") or not low.endswith((".jpg", ".jpeg", ".png", ".bmp")):
                        continue  # non-image entries are reported by the reader
                    if not _SYSU_NAME.match(f.name):
                        problems.append(
                            (
                                f.path,
                                f"SYSU-MM01: {f.path}: expected a file name NNNN.jpg (e.g. 0001.jpg), got {f.name!r}",
                            )
                        )


def _sysu_official(root: str, records: Sequence, report: CheckReport) -> None:
    """Check ``exp/rand_perm_cam.mat`` / ``exp/test_id.mat`` against the tree, if present."""
    from .data.readers import SYSU_OFFICIAL_FILES, DatasetError, read_sysu_mm01_official

    paths = [os.path.join(root, *f.split("/")) for f in SYSU_OFFICIAL_FILES]
    if not all(os.path.isfile(p) for p in paths):
        report.notes.append(
            f"official-protocol files {', '.join(SYSU_OFFICIAL_FILES)}: not all present "
            f"(protocol='official' unavailable; the default baseline protocol needs neither)"
        )
        return
    try:
        split = read_sysu_mm01_official(root)
    except DatasetError as e:
        report.problems.append((paths[0], str(e)))
        return
    sizes: dict[tuple[int, int], int] = defaultdict(int)
    for r in records:
        sizes[(r.camid, r.pid)] += 1
    keys = set(sizes) | {k for k in split.rand_perm if k[1] in {r.pid for r in records}}
    for cam, pid in sorted(keys):
        n_perm = split.rand_perm[(cam, pid)].shape[1] if (cam, pid) in split.rand_perm else 0
        if n_perm != sizes.get((cam, pid), 0):
            folder = os.path.join(root, f"cam{cam}", f"{pid:04d}")
            report.problems.append(
                (
                    folder,
                    f"{paths[0]}: rand_perm_cam{{{cam}}}{{{pid}}} permutes {n_perm} "
                    f"images, {folder} holds {sizes.get((cam, pid), 0)}",
                )
            )
    with_images = len(set(split.test_ids) & {r.pid for r in records})
    report.notes.append(
        f"official-protocol files present ({', '.join(SYSU_OFFICIAL_FILES)}): {len(split.test_ids)} "
        f"test ids ({with_images} with images), {split.num_trials} trials"
    )


def check_data(
    dataset: str,
    root: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Read ``root`` as ``dataset`` with the real reader, decode every image, compare counts.

    Args:
        dataset: one of :data:`CHECK_DATASETS` (``-``/``_``/case ignored).
        root: the dataset folder (the CSV/TSV file for ``"list"``).
        workers: decoding threads (default ``min(16, 2 * cpu_count)``).
        progress: tqdm progress bar while decoding.

    Returns:
        :class:`CheckReport`; never raises on a broken tree (``fatal`` holds the error).
    """
    from .data.readers import DatasetError, _canonical_name, verify_images

    name = _canonical_name(dataset)
    report = CheckReport(name, os.path.abspath(os.fspath(root)), published=PUBLISHED_COUNTS.get(name, {}))
    problems: list = []
    try:
        splits = _read_splits(name, report.root, problems)
    except (DatasetError, OSError, ValueError) as e:
        report.fatal = str(e)
        report.problems = [(p.path, p.message) for p in problems]
        return report
    if name == "sysu-mm01":
        _sysu_names(report.root, problems)
        _sysu_official(report.root, [r for s, recs in splits for r in recs], report)
    unique = sorted({r.path for _, recs in splits for r in recs})
    report.images = len(unique)
    failures = verify_images(unique, workers=workers, progress=progress, desc=f"decode {name}")
    problems += [(p, f"{p}: unreadable image ({err})") for p, err in failures]
    # the same missing image may be named by several lists (RegDB trials): list each file once
    by_path: dict[str, list[str]] = defaultdict(list)
    for path, msg in list(problems) + report.problems:
        if msg not in by_path[path]:
            by_path[path].append(msg)
    report.problems = [
        (path, msgs[0] + (f" (and {len(msgs) - 1} more entries naming this file)" if len(msgs) > 1 else ""))
        for path, msgs in sorted(by_path.items())
    ]
    for label, recs in splits:
        counts = _counts(recs)
        report.rows.append((label, counts))
        for col, pub in report.published.get(label, {}).items():
            if counts[col] != pub:
                report.differences.append((label, col, counts[col], pub))
    return report


def _fmt(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def format_report(report: CheckReport, strict: bool = False) -> str:
    """The human-readable table and problem list of a :class:`CheckReport`."""
    lines = [f"check-data {report.dataset} {report.root}"]
    if report.fatal is not None:
        lines.append(f"ERROR: {report.fatal}")
    if report.rows:
        cols = ("ids", "visible", "infrared")
        head = ["split"] + [f"{c} (published)" for c in cols]
        body = []
        diff = {(s, c) for s, c, _, _ in report.differences}
        for label, counts in report.rows:
            pub = report.published.get(label, {})
            cells = [label]
            for c in cols:
                mark = " *" if (label, c) in diff else "  "
                cells.append(f"{_fmt(counts[c])}{mark} ({_fmt(pub[c]) if c in pub else '-'})")
            body.append(cells)
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        for r in [head] + body:
            lines.append(
                "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            )
        lines.append(f"{report.images:,} images decoded; ids count identities, visible/infrared count images.")
        if report.dataset in FOOTNOTES:
            lines.append(f"({FOOTNOTES[report.dataset]})")
        if not report.published:
            lines.append("No published counts for this dataset: nothing to compare.")
        elif report.differences:
            what = "an error with --strict" if strict else "not an error unless --strict"
            lines.append(
                f"* {len(report.differences)} counts differ from the published counts of the real dataset: "
                f"expected for the synthetic benchmark or a subset, {what}."
            )
        else:
            lines.append("All counts equal the published counts of the real dataset.")
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.problems:
        lines.append(f"PROBLEMS: {len(report.problems)} unreadable, mis-named or missing files:")
        lines += [f"  {msg}" for _, msg in report.problems[:MAX_LISTED]]
        if len(report.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED} more")
    status = "FAILED" if not report.ok or (strict and report.differences) else "OK"
    lines.append(
        f"{status}: {'readable' if report.ok else 'not readable'}{', counts differ' if report.differences else ''}"
    )
    return "\n".join(lines)
