"""Command line of cmamlib: ``python -m cmamlib <command> ...``.

The notebooks stay the front door; this is for servers and batch jobs, and calls the
same library functions. Commands:

``check-data DATASET ROOT``
    Read a dataset tree with the real reader (:mod:`cmamlib.data.readers`), decode
    every image in parallel threads (tqdm progress bar), and print a table of ids and
    images per split and modality beside the published counts of the real dataset,
    flagging every difference. Exit status: **0** when every file is readable and
    every list entry exists (count differences are flagged but do not fail: the
    synthetic trees and subsets differ by design; ``--strict`` makes them fail too);
    **1** when a file is unreadable, mis-named, not an image, a list entry is missing,
    or the layout itself is wrong (each problem is listed, the first 20 then a count);
    2 for a usage error. ``--json PATH`` also writes the report as JSON.

``train stage1|stage2 --config NAME_OR_PATH --out RUN_DIR [--data-root DIR] [key=value ...]``
    Train a stage into a run folder (:mod:`cmamlib.runs`) with a named preset or a YAML
    file plus overrides (:mod:`cmamlib.presets`; ``--list-presets`` lists them). Stage 2
    reads stage 1 from ``init_from=<stage-1 run folder>``. Rerunning the same command
    resumes the run. Under ``torchrun --nproc_per_node N`` (and ``--nnodes``) the run is
    distributed over N processes with DistributedDataParallel (:mod:`cmamlib.distributed`).
    Exit 0 when the run finished; 2 for a bad config or usage; 1 for a data or run-folder
    error (the message names the file or field).

``evaluate --dataset D --root R --checkpoint C [--protocol baseline|official]``
    Evaluate a run folder or checkpoint on a test set and write
    ``<reports>/<name>/metrics.json`` (:func:`cmamlib.reports.write_metrics`, as the
    notebooks) with the run's ``config.yaml`` beside it.

Adding a command (``train``, ``evaluate``...): write ``_add_<name>(subparsers)``,
which registers a sub-parser whose ``func`` default is ``f(args) -> int`` (the exit
status), and append it to :data:`COMMANDS`. Heavy imports (torch) belong inside ``f``
so that ``--help`` and ``check-data`` stay fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

__all__ = ["COMMANDS", "PUBLISHED_COUNTS", "CheckReport", "build_parser", "check_data", "main"]

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


def _dataset_arg(value: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", value.lower())
    for name in CHECK_DATASETS:
        if re.sub(r"[^a-z0-9]", "", name) == key:
            return name
    raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; expected one of {', '.join(CHECK_DATASETS)}")


def _run_check_data(args: argparse.Namespace) -> int:
    report = check_data(args.dataset, args.root, workers=args.workers, progress=not args.no_progress)
    print(format_report(report, strict=args.strict))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**report.to_dict(), "strict": args.strict}, f, indent=2)
    if not report.ok or (args.strict and report.differences):
        return 1
    return 0


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-data",
        help="read a dataset tree, decode every image, compare counts with the published ones",
        description="Read DATASET at ROOT with cmamlib's reader, decode every image in parallel and "
        "print ids and images per split and modality beside the real dataset's published counts. "
        "Exit 0 when readable (count differences are flagged, not failed, unless --strict), 1 when "
        "a file is unreadable, mis-named or missing, or the layout is wrong.",
    )
    p.add_argument("dataset", type=_dataset_arg, metavar="DATASET", help=", ".join(CHECK_DATASETS))
    p.add_argument("root", metavar="ROOT", help="the dataset folder (the CSV/TSV file for 'list')")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default min(16, 2 x cores))")
    p.add_argument(
        "--strict", action="store_true", help="also fail (exit 1) when a count differs from the published one"
    )
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_check_data)


# ----------------------------------------------------------------------------- train


def _command_line() -> str:
    return " ".join([os.path.basename(sys.executable), "-m", "cmamlib"] + sys.argv[1:]) if sys.argv else ""


def _list_presets() -> str:
    from .presets import PRESETS

    w = max(len(n) for n in PRESETS)
    return "\n".join(f"{n.ljust(w)}  {p['description']}" for n, p in PRESETS.items())


def _run_train(args: argparse.Namespace) -> int:
    from . import distributed as dist
    from .data.records import DatasetError
    from .presets import ConfigError, load_config
    from .runs import RunDirError, train_stage1, train_stage2
    from .training.common import CheckpointError
    from .training.loop import StopTraining
    from .utils import UnsafeCheckpointError

    if args.list_presets:
        print(_list_presets())
        return 0
    if args.stage is None or args.config is None or args.out is None:
        print("error: train needs STAGE (stage1 or stage2), --config and --out (see --help)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stage_cfg = cfg.stage1 if args.stage == "stage1" else cfg.stage2
    try:
        dist.init_from_env(stage_cfg.device)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main_rank = dist.is_main()
    if main_rank:
        sync = " (sync_bn)" if stage_cfg.sync_bn and dist.world_size() > 1 else ""
        print(
            f"train {args.stage}: config {cfg.preset}, {dist.world_size()} process(es){sync}, "
            f"global batch {stage_cfg.batch_size}, run folder {args.out}",
            flush=True,
        )
    try:
        fn = train_stage1 if args.stage == "stage1" else train_stage2
        res = fn(
            cfg,
            args.out,
            args.data_root,
            progress=not args.no_progress,
            command=_command_line(),
            stop_after_epoch=args.stop_after_epoch,
        )
    except (RunDirError, DatasetError, FileNotFoundError, CheckpointError, UnsafeCheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except StopTraining:
        if main_rank:
            print(
                f"{args.stage} stopped after epoch {args.stop_after_epoch} as asked (--stop-after-epoch); "
                f"the same command without it resumes {args.out}"
            )
        return 0
    # ConfigError, and config values the run refuses (e.g. a batch that does not split over the ranks)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.cleanup()
    if main_rank:
        last = res.history[-1] if res.history else {}
        losses = ", ".join(
            f"{k[5:]} {v:.3f}" for k, v in last.items() if k.startswith("loss_") and isinstance(v, float)
        )
        print(
            f"{args.stage} finished: {len(res.history)} epochs in {args.out} ({res.seconds:.1f} s this call, "
            f"{res.images_per_second:.1f} training images/s); last epoch: {losses}"
        )
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train stage 1 or stage 2 into a run folder (presets, YAML configs, key=value overrides, torchrun)",
        description="Train a stage with a named preset or a YAML config plus key=value overrides "
        "(e.g. stage2.eps=0.5). Stage 2 starts from the stage-1 run folder given as init_from=RUN_DIR. "
        "Rerunning the same command resumes the run. Launch with torchrun --nproc_per_node N for "
        "several GPUs (DistributedDataParallel).",
        epilog="presets:\n" + _list_presets_safe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "stage",
        nargs="?",
        choices=("stage1", "stage2"),
        help="stage1 (CMAM on the source) or stage2 (self-training on the target)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. stage1.epochs=10 init_from=runs/s1"
    )
    p.add_argument("--config", "-c", metavar="NAME_OR_PATH", help="a preset name (--list-presets) or a YAML file")
    p.add_argument(
        "--out", "-o", metavar="RUN_DIR", help="run folder (config.yaml, checkpoint.pt, log.jsonl, metrics.json)"
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get("CMAMLIB_DATA", "data"),
        metavar="DIR",
        help="folder holding the datasets (default: $CMAMLIB_DATA or ./data)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="K",
        help="stop once epoch K (0-based) is checkpointed (time-boxed jobs); the same command resumes",
    )
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.set_defaults(func=_run_train)


def _list_presets_safe() -> str:
    try:
        return _list_presets()
    except Exception:  # pragma: no cover - help must always work
        return "(python -m cmamlib train --list-presets)"


# ----------------------------------------------------------------------------- evaluate


def _fmt_results(results: dict) -> str:
    lines = [f"{'protocol':<34} {'R1':>6} {'R10':>6} {'R20':>6} {'mAP':>6} {'mINP':>6}"]
    for k, r in results.items():
        m = r["mean"]
        lines.append(
            f"{r['protocol']:<34} " + " ".join(f"{100 * m[x]:6.2f}" for x in ("R1", "R10", "R20", "mAP", "mINP"))
        )
    return "\n".join(lines)


def _run_evaluate(args: argparse.Namespace) -> int:
    import shutil

    from .data.records import DatasetError
    from .presets import config_dict
    from .reports import write_metrics
    from .runs import CONFIG_FILE, RunDirError, evaluate_run, load_run
    from .utils import resolve_device

    try:
        run = load_run(args.checkpoint, require_complete=not args.allow_incomplete)
        device = resolve_device(args.device or run.stage_config.get("device", "auto"))
        run.model_a.to(device)
        if run.model_b is not None:
            run.model_b.to(device)
        res = evaluate_run(
            run,
            args.dataset,
            args.root,
            protocol=args.protocol,
            trials=args.trials,
            trial=args.trial,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except (RunDirError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.name or f"eval_{run.run_dir.name}_{res['dataset']}" + (
        "_official" if args.protocol == "official" else ""
    )
    payload = {
        "checkpoint": str(run.path.resolve()),
        "stage": run.stage,
        "epoch": run.epoch,
        "complete": run.complete,
        **res,
        "config": config_dict(run.config) if run.config is not None else {run.stage: run.stage_config},
    }
    path = write_metrics(name, payload, root=args.reports)
    if run.config is not None and (run.run_dir / CONFIG_FILE).is_file():
        shutil.copyfile(run.run_dir / CONFIG_FILE, path.parent / CONFIG_FILE)
    else:
        import yaml

        (path.parent / CONFIG_FILE).write_text(yaml.safe_dump({run.stage: run.stage_config}, sort_keys=False))
    print(f"evaluate {res['dataset']} ({args.protocol}) of {run.stage} run {run.run_dir} (epoch {run.epoch + 1}):")
    print(_fmt_results(res["results"]))
    print(f"written: {path}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run folder / checkpoint on a test set; writes reports/<name>/metrics.json",
        description="Evaluate the features of a stage-1 (F_rg, direct transfer) or stage-2 (fused A + B) run on "
        "a dataset's test set with the standard protocol, and write the report JSON (the notebooks' format) "
        "with the run's config.yaml beside it.",
    )
    p.add_argument(
        "--dataset",
        "-d",
        required=True,
        type=_eval_dataset_arg,
        metavar="D",
        help="sysu-mm01, regdb, llcm, sysu-mm02, market1501, msmt17",
    )
    p.add_argument("--root", "-r", required=True, metavar="R", help="the dataset folder")
    p.add_argument(
        "--checkpoint", required=True, metavar="C", help="a run folder (--out of train) or its checkpoint.pt"
    )
    p.add_argument(
        "--protocol",
        choices=("baseline", "official"),
        default="baseline",
        help="SYSU-MM01 only: seeded-random galleries (baseline, default) or exp/rand_perm_cam.mat (official)",
    )
    p.add_argument("--trials", type=int, default=10, help="gallery trials (SYSU-MM01, LLCM; default 10)")
    p.add_argument(
        "--trial", type=int, default=None, help="RegDB split 1..10 (default: the run's data.regdb_trial, else 1)"
    )
    p.add_argument("--reports", default="reports", metavar="DIR", help="reports folder (default ./reports)")
    p.add_argument("--name", default=None, help="report name (default eval_<run folder>_<dataset>[_official])")
    p.add_argument("--device", default=None, help="device (default: the run's)")
    p.add_argument("--batch-size", type=int, default=None, help="inference batch (default: the run's eval_batch_size)")
    p.add_argument("--allow-incomplete", action="store_true", help="evaluate an unfinished run's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_evaluate)


EVAL_DATASETS = ("sysu-mm01", "regdb", "llcm", "sysu-mm02", "market1501", "msmt17")


def _eval_dataset_arg(value: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", value.lower())
    for name in EVAL_DATASETS:
        if re.sub(r"[^a-z0-9]", "", name) == key:
            return name
    raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; expected one of {', '.join(EVAL_DATASETS)}")


#: Sub-command registrars, in help order.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_check_data, _add_train, _add_evaluate]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m cmamlib`` parser with every command of :data:`COMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m cmamlib",
        description="cmamlib: unsupervised transferable visible-infrared person re-identification.",
    )
    parser.add_argument("--version", action="version", version=f"cmamlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
    if extra:  # key=value overrides after the options of `train` (argparse stops collecting positionals there)
        if getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:  # no command: the help, listing every command, as a usage error
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
