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
    2 for a usage error. ``--json PATH`` also writes the report as JSON. The checker
    itself is :mod:`cmamlib.dataset_check`.

``train stage1|stage2 --config NAME_OR_PATH --out RUN_DIR [--data-root DIR] [key=value ...]``
    Train a stage into a run folder (:mod:`cmamlib.runs`) with a named preset or a YAML
    file plus overrides (:mod:`cmamlib.presets`; ``--list-presets`` lists them). Stage 2
    reads stage 1 from ``init_from=<stage-1 run folder>``. Rerunning the same command
    resumes the run. Under ``torchrun --nproc_per_node N`` (and ``--nnodes``) the run is
    distributed over N processes with DistributedDataParallel (:mod:`cmamlib.distributed`).
    Exit 0 when the run finished; 2 for a bad config or usage; 1 for a data or run-folder
    error (the message names the file or field).

``source-labels --config NAME_OR_PATH --out LABELS.csv [--data-root DIR] [--run-dir DIR] [key=value ...]``
    The source pseudo labels that stage 1's ``identity_loss=classifier`` trains on, made
    once (:mod:`cmamlib.training.source_labels`): an unsupervised RGB-only clustering run
    on ``data.source`` with the ``stage1`` settings, written as a ``path,label`` file
    for ``stage1.label_file``, with its label quality (ARI / purity against the true ids,
    a diagnostic) printed and saved in ``LABELS.csv.json``. Rerunning resumes or reuses it.

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
import json
import os
import re
import sys
from typing import Callable, Iterable

from .dataset_check import (  # noqa: F401  (re-exported: the command's checker)
    CHECK_DATASETS,
    FOOTNOTES,
    MAX_LISTED,
    PUBLISHED_COUNTS,
    CheckReport,
    check_data,
    format_report,
)

__all__ = ["COMMANDS", "PUBLISHED_COUNTS", "CheckReport", "build_parser", "check_data", "main"]


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
    from .training.driver import StopTraining
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


# ----------------------------------------------------------------------------- source-labels


def _run_source_labels(args: argparse.Namespace) -> int:
    from . import distributed as dist
    from .data.records import DatasetError
    from .presets import ConfigError, load_config
    from .runs import RunDirError, make_source_labels, source_labels_summary
    from .training.common import CheckpointError

    try:
        cfg = load_config(args.config, args.overrides)
        dist.init_from_env(cfg.stage1.device)
    except (ConfigError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        res = make_source_labels(cfg, args.out, args.data_root, run_dir=args.run_dir, progress=not args.no_progress)
    except (RunDirError, DatasetError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.cleanup()
    if dist.is_main():
        print(f"{source_labels_summary(res)}; use stage1.label_file={res.path}")
    return 0


def _add_source_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "source-labels",
        help="make the source pseudo labels of stage 1 (classifier mode) once, as a path,label file",
        description="Cluster the unlabeled source RGB images (Jaccard + DBSCAN + cluster memory, re-clustered "
        "every epoch, the stage1 settings of the config) and write the final pseudo labels as a path,label "
        "file for stage1.label_file; prints their quality against the true ids (diagnostic only).",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. stage1.epochs=10")
    p.add_argument("--config", "-c", required=True, metavar="NAME_OR_PATH", help="a preset name or a YAML file")
    p.add_argument("--out", "-o", required=True, metavar="LABELS.csv", help="the label file to write")
    p.add_argument(
        "--data-root",
        default=os.environ.get("CMAMLIB_DATA", "data"),
        metavar="DIR",
        help="folder holding the datasets (default: $CMAMLIB_DATA or ./data)",
    )
    p.add_argument(
        "--run-dir", default=None, metavar="DIR", help="the clustering run's folder (default LABELS.csv.run)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_source_labels)


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
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_check_data,
    _add_train,
    _add_source_labels,
    _add_evaluate,
]


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
