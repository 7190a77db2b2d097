"""Run folders: what ``python -m cmamlib train`` and ``evaluate`` do, as functions.

A run folder (``--out``) holds, written by rank 0:

* ``config.yaml``: the resolved :class:`~cmamlib.presets.RunConfig` (plus a ``_run``
  block: command, stage, dataset folders, world size), written before training starts;
* ``checkpoint.pt``: the latest complete epoch (models, optimiser, RNG states, stage
  config), written atomically after every epoch (:class:`cmamlib.training.common.Checkpointer`);
* ``log.jsonl``: one line per epoch;
* ``metrics.json``: the run's summary when it finishes (:func:`cmamlib.reports.write_metrics`).

Running the same command again resumes the run from its checkpoint (a finished run
returns at once); a run folder started with another config is refused, naming the
fields that differ. Stage 2 reads stage 1's output from ``init_from: <stage-1 run
folder>`` (its ``config.yaml`` and ``checkpoint.pt``) and refuses a missing or
unfinished one. :func:`evaluate_run` evaluates any stage's checkpoint on a test set
with the standard protocols.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import distributed as dist
from .presets import ConfigError, RunConfig, config_dict, diff_configs, read_config, save_config
from .training.common import RESUME_FREE_FIELDS
from .utils import UnsafeCheckpointError, load_checkpoint

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "SOURCE_LABELS_FILE",
    "LoadedRun",
    "RunDirError",
    "evaluate_run",
    "load_run",
    "make_source_labels",
    "source_labels_summary",
    "run_features",
    "run_test_feature",
    "train_stage1",
    "train_stage2",
]

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
#: The source pseudo labels ``train stage1`` makes in its run folder when ``stage1.label_file`` is unset.
SOURCE_LABELS_FILE = "source_labels.csv"
STAGES = {"cmam": "stage1", "selftrain": "stage2"}
"""Checkpoint ``stage`` entry -> command-line stage name."""

#: Stage fields that may change when a run is resumed (hardware, not method).
RESUME_FREE = RESUME_FREE_FIELDS


class RunDirError(RuntimeError):
    """A run folder that is missing, unfinished, or was started with another config."""


# ----------------------------------------------------------------------------- data


def read_records(dataset: str, root: str | os.PathLike, splits: Sequence[str], trial: int = 1) -> list:
    """Records of ``splits`` of ``dataset`` at ``root`` (RegDB: split ``trial``)."""
    from .data.readers import _canonical_name, read_dataset

    name = _canonical_name(dataset)
    out: list = []
    for s in splits:
        kw = {"trial": trial} if name == "regdb" else {}
        out += read_dataset(name, root, s, **kw)
    return out


def _load_images(
    records: Sequence, size: Sequence[int], cache_dir: str | None, progress: bool, desc: str, workers: int | None = None
) -> torch.Tensor:
    """Decode once; with a cache folder in a distributed run, rank 0 fills the cache first."""
    from .data.loading import load_images

    first = cache_dir is not None and dist.is_distributed()
    if first and not dist.is_main():
        dist.barrier()
    images = load_images(
        records, tuple(size), workers=workers, cache_dir=cache_dir, progress=progress and dist.is_main(), desc=desc
    )
    if first and dist.is_main():
        dist.barrier()
    return images


SKIPPED_FILE = "skipped_images.txt"


def _load_training_images(
    records: list, size: Sequence[int], cfg: RunConfig, out: Path, progress: bool, desc: str
) -> tuple[list, torch.Tensor, list[str]]:
    """The training images of a run: every one decoded (:func:`_load_images`), or, with
    ``data.skip_unreadable``, the readable ones, the others listed by path with the
    reason in ``<out>/skipped_images.txt`` (rank 0) and a warning.

    Returns:
        ``(records kept, (M, 3, H, W) uint8 images, skipped paths)``.
    """
    if not cfg.data.skip_unreadable:
        return records, _load_images(records, size, cfg.data.cache_dir, progress, desc, cfg.data.decode_workers), []
    from .data.loading import load_readable_images

    got = load_readable_images(
        records,
        tuple(size),
        workers=cfg.data.decode_workers,
        cache_dir=cfg.data.cache_dir,
        progress=progress and dist.is_main(),
        desc=desc,
    )
    if not got.kept:
        raise RunDirError(
            f"data.skip_unreadable: none of the {len(records)} training images could be read "
            f"(first: {got.skipped[0][1]})"
        )
    skipped = [p for p, _ in got.skipped]
    if dist.is_main() and skipped:
        (out / SKIPPED_FILE).write_text("".join(f"{p}\t{why}\n" for p, why in got.skipped))
        import warnings

        warnings.warn(
            f"skip_unreadable: skipped {len(skipped)} unreadable training image(s), listed in "
            f"{out / SKIPPED_FILE}; first: {got.skipped[0][1]}",
            stacklevel=2,
        )
    return [records[i] for i in got.kept], got.images, skipped


# ----------------------------------------------------------------------------- run folders


def _relevant(d: dict, stage: str) -> dict:
    """The part of a config dict that must not change when a ``stage`` run is resumed."""
    sec = {k: v for k, v in d.get(stage, {}).items() if k not in RESUME_FREE}
    data = d.get("data", {})
    keys = ("source", "source_splits") if stage == "stage1" else ("target", "regdb_trial")
    out = {stage: sec, "data": {k: data.get(k) for k in keys}}
    if stage == "stage2":
        out["init_from"] = d.get("init_from")
    return out


def _prepare_run_dir(out: Path, cfg: RunConfig, stage: str, extra: dict) -> None:
    """Refuse a run folder holding a run of another config; write ``config.yaml``."""
    import yaml

    cfg_path, ckpt_path = out / CONFIG_FILE, out / CHECKPOINT_FILE
    new = config_dict(cfg)
    if ckpt_path.exists() and cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text()) or {}
        old_stage = (old.get("_run") or {}).get("stage")
        if old_stage is not None and old_stage != stage:
            raise RunDirError(f"{out} holds a {old_stage} run; use another --out for {stage}")
        diffs = diff_configs(_relevant(old, stage), _relevant(new, stage))
        if diffs:
            raise RunDirError(
                f"{out} holds a {stage} run started with another config ({'; '.join(diffs[:8])}"
                f"{'; ...' if len(diffs) > 8 else ''}): rerun the same command to resume it, or use another --out"
            )
    save_config(cfg, cfg_path, {**extra, "stage": stage, "world_size": dist.world_size()})


def _summary(stage: str, res: Any, out: Path, cfg: RunConfig, data: dict) -> dict:
    return {
        "stage": stage,
        "run_dir": str(out.resolve()),
        "preset": cfg.preset,
        "epochs": len(res.history),
        "world_size": dist.world_size(),
        "seconds": res.seconds,
        "train_images_per_second": res.images_per_second,
        "data": data,
        "last_epoch": res.history[-1] if res.history else None,
        "history": res.history,
        "config": config_dict(cfg),
    }


def _write_summary(out: Path, payload: dict) -> None:
    from .reports import write_metrics

    write_metrics(out.name, payload, root=out.parent)


def _stopper(stop_after_epoch: int | None):
    """An ``on_epoch_end`` hook that stops the run after epoch ``stop_after_epoch``."""
    if stop_after_epoch is None:
        return None
    from .training.driver import StopTraining

    def hook(epoch: int, row: dict) -> None:
        if epoch >= stop_after_epoch:
            raise StopTraining(f"stopped after epoch {epoch} (stop_after_epoch={stop_after_epoch})")

    return hook


def train_stage1(
    cfg: RunConfig,
    out: str | os.PathLike,
    data_root: str | os.PathLike = "data",
    progress: bool = True,
    command: str | None = None,
    stop_after_epoch: int | None = None,
):
    """Stage 1 (:func:`cmamlib.training.cmam.run_cmam`) on ``cfg.data``'s source, in ``out``.

    Resumes ``out`` when it holds a run of the same config. Every rank of a distributed
    run calls it; rank 0 writes the folder. In classifier mode (the default, the authors'
    code) without ``stage1.label_file`` the source pseudo labels are made first, once, in
    ``out/source_labels.csv`` (:func:`make_source_labels`; reused by a rerun).
    ``stop_after_epoch=k``: stop after epoch ``k`` (0-based) has been checkpointed, raising
    :class:`cmamlib.training.driver.StopTraining`
    (a time-boxed job: the same call resumes); also for :func:`train_stage2`.

    Returns:
        :class:`cmamlib.training.cmam.CMAMResult`.

    Raises:
        ConfigError: a paper preset without ``stage1.pretrained``.
        RunDirError: ``out`` holds a run of another config.
        DatasetError: the source dataset cannot be read.
    """
    from .training.cmam import run_cmam

    out = Path(out)
    s1 = cfg.stage1
    if cfg.require_pretrained and s1.pretrained is None:
        raise ConfigError(
            f"preset {cfg.preset!r} fine-tunes ImageNet weights, but stage1.pretrained is not set: add "
            f"stage1.pretrained=/path/to/resnet50.pth (a torchvision ResNet-50 state dict, .pth or .safetensors; "
            f"nothing is downloaded), or require_pretrained=false to train from random init on purpose "
            f"(far lower accuracy at paper scale)"
        )
    make_labels = s1.identity_loss == "classifier" and s1.label_file is None
    if make_labels:
        # the authors' first step (PPLR's labels for them): the source pseudo labels once, in the
        # run folder, after the folder's config check; a rerun of the same command reuses the file
        cfg = replace(cfg, stage1=replace(s1, label_file=str(out / SOURCE_LABELS_FILE)))
        s1 = cfg.stage1
    root = cfg.data.root("source", data_root)
    records = read_records(cfg.data.source, root, cfg.data.source_splits)
    data = {
        "source": cfg.data.source,
        "root": str(root),
        "splits": list(cfg.data.source_splits),
        "images": len(records),
    }
    dist.run_on_main(lambda: _prepare_run_dir(out, cfg, "stage1", {"command": command, "data": data}))
    records, images, skipped = _load_training_images(
        records, s1.image_size, cfg, out, progress, f"{cfg.data.source} images"
    )
    if make_labels:
        if dist.is_main():
            print(
                f"stage1.label_file is not set: making the source pseudo labels once in {s1.label_file} "
                f"(an RGB-only clustering run; stage1.label_file=FILE gives your own, e.g. PPLR's)",
                flush=True,
            )
        labels = make_source_labels(cfg, s1.label_file, progress=progress, records=records, images=images)
        if dist.is_main():
            print(source_labels_summary(labels), flush=True)
    data.update(images=len(records), skipped_images=skipped)
    res = run_cmam(
        s1, records, images, run_dir=out, resume=True, progress=progress, on_epoch_end=_stopper(stop_after_epoch)
    )
    if dist.is_main():
        _write_summary(out, _summary("stage1", res, out, cfg, data))
    dist.barrier()
    return res


def source_labels_summary(res) -> str:
    """One line on a :class:`cmamlib.training.source_labels.SourceLabelsResult`: where, how
    many clusters, and their quality against the true ids (a diagnostic, never trained on)."""
    q = res.quality
    return (
        f"source labels {'reused' if res.reused else 'written'}: {res.path} ({q['clusters']} clusters, "
        f"{q['noise_fraction']:.1%} noise; against the true ids, diagnostic only: ARI {q['ari']:.3f}, "
        f"NMI {q['nmi']:.3f}, purity {q['purity']:.3f})"
    )


def make_source_labels(
    cfg: RunConfig,
    out: str | os.PathLike,
    data_root: str | os.PathLike = "data",
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    records: list | None = None,
    images: torch.Tensor | None = None,
):
    """The source pseudo labels of ``cfg`` (:func:`cmamlib.training.source_labels.run_source_labels`
    with ``cfg.stage1``, on ``cfg.data``'s source) written to the ``path,label`` file
    ``out`` (paths relative to the dataset root), with its summary ``<out>.json``. The
    clustering run's checkpoint lives in ``run_dir`` (default ``<out>.run/``) and is
    resumed; a finished file with the same config is reused. ``records`` / ``images``: the
    source training records and their decoded ``(N, 3, H, W)`` uint8 images when the caller
    already has them (:func:`train_stage1`); else they are read and decoded here.

    Returns:
        :class:`cmamlib.training.source_labels.SourceLabelsResult`.
    """
    from .training.source_labels import run_source_labels

    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    if images is None:
        root = cfg.data.root("source", data_root)
        records = read_records(cfg.data.source, root, cfg.data.source_splits)
        records, images, _ = _load_training_images(
            records, cfg.stage1.image_size, cfg, run_dir, progress, f"{cfg.data.source} images"
        )
    return run_source_labels(cfg.stage1, records, out, images, run_dir=run_dir, progress=progress)


@dataclass
class LoadedRun:
    """A run folder (or checkpoint file) read back by :func:`load_run`.

    Attributes:
        stage: ``"stage1"`` or ``"stage2"``.
        path: the checkpoint file.
        run_dir: its folder.
        config: the run's resolved :class:`RunConfig` (its ``config.yaml``), or None
            when the checkpoint has no ``config.yaml`` beside it.
        stage_config: the stage config dict stored in the checkpoint.
        model_a / model_b: stage 1: ``F_rg`` / ``F_g`` (None without the auxiliary
            network); stage 2: models A / B (None with ``two_models=False``). Eval mode.
        epoch: last complete epoch (0-based); complete: all epochs done.
    """

    stage: str
    path: Path
    run_dir: Path
    config: RunConfig | None
    stage_config: dict
    model_a: torch.nn.Module
    model_b: torch.nn.Module | None
    epoch: int
    complete: bool

    @property
    def epochs(self) -> int:
        c = self.stage_config
        return int(c["epochs"]) + (int(c.get("kmeans_epochs", 0)) if self.stage == "stage2" else 0)


def _build(stage_cfg: dict, state: dict | None):
    from .models import build_model

    m = build_model(
        stage_cfg["arch"],
        width=int(stage_cfg["width"]),
        last_stride=int(stage_cfg["last_stride"]),
        non_local=bool(stage_cfg.get("non_local", False)),
    )
    if state is None:
        return None
    m.load_state_dict(state)
    return m.eval()


def load_run(
    path: str | os.PathLike,
    expect_stage: str | None = None,
    require_complete: bool = True,
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Read a run folder (or its ``checkpoint.pt``) and rebuild its models.

    Args:
        path: a run folder (``--out`` of ``train``) or a checkpoint file.
        expect_stage: ``"stage1"`` / ``"stage2"``: refuse a run of the other stage.
        require_complete: refuse a run whose last epoch is not done.
        device: where the models go.

    Raises:
        RunDirError: a missing folder / checkpoint, a file that is not a cmamlib
            checkpoint, a run of another stage, or an unfinished run (the message says
            how to finish it).
    """
    p = Path(path)
    what = f"stage-1 run {p}" if expect_stage == "stage1" else f"run {p}"
    if not p.exists():
        raise RunDirError(
            f"{what} does not exist (expected the --out folder of `python -m cmamlib train "
            f"{expect_stage or 'stage1|stage2'}`)"
        )
    ckpt = p / CHECKPOINT_FILE if p.is_dir() else p
    run_dir = ckpt.parent
    if not ckpt.is_file():
        raise RunDirError(
            f"{what}: no {CHECKPOINT_FILE} in {run_dir}: the run has not finished an epoch yet "
            f"(or this is not a run folder); run `python -m cmamlib train ... --out {run_dir}` first"
        )
    try:
        state = load_checkpoint(ckpt)
    except UnsafeCheckpointError as e:
        raise RunDirError(str(e)) from None
    except Exception as e:
        raise RunDirError(f"{ckpt}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("stage") not in STAGES or "config" not in state:
        raise RunDirError(f"{ckpt}: not a cmamlib stage-1/stage-2 checkpoint (no 'stage'/'config' entries)")
    stage = STAGES[state["stage"]]
    if expect_stage is not None and stage != expect_stage:
        raise RunDirError(f"{what} is a {stage} run, expected a {expect_stage} run")
    cfg = None
    if (run_dir / CONFIG_FILE).is_file():
        try:
            cfg = read_config(run_dir / CONFIG_FILE)
        except ConfigError as e:
            raise RunDirError(f"{run_dir / CONFIG_FILE}: {e}") from None
    sc = state["config"]
    if stage == "stage1":
        a, b = _build(sc, state["model_rg"]), _build(sc, state.get("model_g"))
    else:
        a, b = _build(sc, state["model_a"]), _build(sc, state.get("model_b"))
    run = LoadedRun(stage, ckpt, run_dir, cfg, sc, a, b, int(state["epoch"]), False)
    run.complete = run.epoch == run.epochs - 1
    if require_complete and not run.complete:
        raise RunDirError(
            f"{what} is unfinished: its checkpoint holds epoch {run.epoch + 1} of {run.epochs}; rerun its "
            f"`python -m cmamlib train {stage} ... --out {run_dir}` command to finish it (it resumes)"
        )
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    run.model_a.to(dev)
    if run.model_b is not None:
        run.model_b.to(dev)
    return run


def train_stage2(
    cfg: RunConfig,
    out: str | os.PathLike,
    data_root: str | os.PathLike = "data",
    progress: bool = True,
    command: str | None = None,
    stop_after_epoch: int | None = None,
):
    """Stage 2 (:func:`cmamlib.training.selftrain.run_selftrain`) on ``cfg.data``'s target
    training images, initialised from the stage-1 run ``cfg.init_from``, in ``out``.

    Returns:
        :class:`cmamlib.training.selftrain.SelfTrainResult`.

    Raises:
        ConfigError: ``init_from`` unset, or a stage-1 backbone other than ``stage2``'s.
        RunDirError: ``init_from`` missing / unfinished / not stage 1, or ``out`` holds a
            run of another config.
    """
    from .training.selftrain import run_selftrain

    out = Path(out)
    s2 = cfg.stage2
    if cfg.init_from is None:
        raise ConfigError(
            "train stage2 needs the stage-1 run: add init_from=RUN_DIR (the --out folder of `python -m cmamlib "
            "train stage1`), or init_from=random for the random-init (no stage 1) ablation"
        )
    init = None
    init_info: dict = {"init_from": cfg.init_from}
    if cfg.init_from.strip().lower() != "random":
        s1 = load_run(cfg.init_from, expect_stage="stage1", require_complete=True)
        sc = s1.stage_config
        mismatch = [
            f"{k}: stage 1 {sc.get(k)!r}, stage2.{k} {getattr(s2, k)!r}"
            for k in ("arch", "width", "last_stride", "non_local")
            if sc.get(k, False) != getattr(s2, k)
        ]
        if mismatch:
            raise ConfigError(
                f"init_from={cfg.init_from}: the stage-1 backbone differs from stage2's ({'; '.join(mismatch)}); "
                f"set the stage2 fields to the stage-1 values"
            )
        init = (s1.model_a, s1.model_b if s1.model_b is not None else s1.model_a)
        init_info.update(init_from_resolved=str(s1.run_dir.resolve()), stage1_epochs=s1.epochs)
    root = cfg.data.root("target", data_root)
    records = read_records(cfg.data.target, root, ("train",), trial=cfg.data.regdb_trial)
    data = {"target": cfg.data.target, "root": str(root), "images": len(records), **init_info}
    if cfg.data.target == "regdb":
        data["regdb_trial"] = cfg.data.regdb_trial
    dist.run_on_main(lambda: _prepare_run_dir(out, cfg, "stage2", {"command": command, "data": data}))
    records, images, skipped = _load_training_images(
        records, s2.image_size, cfg, out, progress, f"{cfg.data.target} images"
    )
    data.update(images=len(records), skipped_images=skipped)
    res = run_selftrain(
        s2,
        records,
        images,
        init_models=init,
        run_dir=out,
        resume=True,
        progress=progress,
        on_epoch_end=_stopper(stop_after_epoch),
    )
    if dist.is_main():
        _write_summary(out, _summary("stage2", res, out, cfg, data))
    dist.barrier()
    return res


# ----------------------------------------------------------------------------- evaluation


def run_test_feature(run: LoadedRun) -> str:
    """The feature a run reports, its config's ``test_feature``: stage 1 ``"pre_bnneck"``
    (the code) or ``"bnneck"``; stage 2 ``"a_pre_bnneck"`` (the code: model A alone) or
    ``"fused"``. A run from before the field reported the earlier one (bnneck / fused)."""
    return str(run.stage_config.get("test_feature", "bnneck" if run.stage == "stage1" else "fused"))


def run_features(run: LoadedRun, batch_size: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Test-time feature function of a run (:func:`run_test_feature`), flip-averaged and
    L2-normalised: stage 1: ``F_rg`` on the image as it is (direct transfer, as notebooks
    01/02), before or after its BNNeck; stage 2: model A's pre-BNNeck feature or the fused
    ``[A(x), B(gray x)]`` feature (:func:`cmamlib.training.selftrain.selftrain_features`)."""
    from .experiments import model_features
    from .training.selftrain import test_feature_fn

    sc = run.stage_config
    bs = int(batch_size or sc.get("eval_batch_size", 256))
    feature = run_test_feature(run)
    if run.stage == "stage1":
        return model_features(run.model_a, batch_size=bs, feature=feature)
    gray, fusion = sc.get("gray_mode", "random_channel"), sc.get("fusion", "concat")
    return test_feature_fn(run.model_a, run.model_b, feature, gray, fusion, batch_size=bs)


def evaluate_run(
    run: LoadedRun,
    dataset: str,
    root: str | os.PathLike,
    protocol: str = "baseline",
    trials: int = 10,
    trial: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate a run's features on a test set, with the protocols of
    :mod:`cmamlib.evaluation` (the notebooks' numbers).

    Args:
        run: :func:`load_run`'s result.
        dataset: ``sysu-mm01`` (all + indoor search, IR -> visible; ``protocol``
            ``"baseline"`` or ``"official"``), ``regdb`` (both directions of split
            ``trial``; default: the run's ``data.regdb_trial``, else 1), ``llcm`` (both
            directions), ``sysu-mm02`` (both directions), ``market-1501`` / ``msmt17``
            (visible -> visible).
        root: the dataset folder.
        trials: gallery trials (SYSU-MM01, LLCM).
        batch_size: inference batch (default: the run's ``eval_batch_size``).

    Returns:
        ``{"dataset", "root", "protocol", "results": {name: EvalResult.to_dict()},
        "summary": {"<name>_<R1|R5|R10|R20|mAP|mINP>": mean}, "images_size", ...}``.
    """
    from .data import readers as R
    from .data.readers import _canonical_name
    from .data.records import INFRARED, record_arrays
    from .evaluation import (
        SYSU_PROTOCOLS,
        EvalResult,
        eval_market,
        evaluate_llcm,
        evaluate_regdb,
        evaluate_sysu,
        evaluate_sysu_mm02,
        pairwise_distance,
    )

    name = _canonical_name(dataset)
    if protocol not in SYSU_PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {SYSU_PROTOCOLS}")
    if protocol != "baseline" and name != "sysu-mm01":
        raise ValueError(
            f"protocol={protocol!r} exists for sysu-mm01 only (docs/protocols.md); {name} has one protocol"
        )
    size = tuple(int(v) for v in run.stage_config["image_size"])
    fn = run_features(run, batch_size)

    def feats(records, desc):
        return fn(_load_images(records, size, None, progress, desc))

    info: dict = {
        "dataset": name,
        "root": str(Path(root).resolve()),
        "protocol": protocol,
        "image_size": list(size),
        "feature": run_test_feature(run),
    }
    results: dict[str, EvalResult] = {}
    if name == "sysu-mm01":
        q, g = R.sysu_query_gallery(R.read_sysu_mm01(root, "test"), "all")
        res = evaluate_sysu(
            feats(q, "SYSU query"),
            q,
            feats(g, "SYSU gallery"),
            g,
            modes=("all", "indoor"),
            trials=trials,
            protocol=protocol,
            root=root if protocol == "official" else None,
        )
        results.update(res)
    elif name == "regdb":
        if trial is None:
            c = run.config
            trial = c.data.regdb_trial if c is not None and c.data.target == "regdb" else 1
        test = R.read_regdb(root, trial, "test")
        vis = [r for r in test if r.modality != INFRARED]
        th = [r for r in test if r.modality == INFRARED]
        results.update(evaluate_regdb(feats(vis, "RegDB visible"), vis, feats(th, "RegDB thermal"), th))
        info["trial"] = trial
    elif name in ("llcm", "sysu-mm02"):
        reader = R.read_llcm if name == "llcm" else R.read_sysu_mm02
        test = reader(root, "test")
        vis = [r for r in test if r.modality != INFRARED]
        ir = [r for r in test if r.modality == INFRARED]
        fv, fi = feats(vis, f"{name} visible"), feats(ir, f"{name} infrared")
        if name == "llcm":
            results["infrared_to_visible"] = evaluate_llcm(fi, ir, fv, vis, trials=trials)
            results["visible_to_infrared"] = evaluate_llcm(fv, vis, fi, ir, trials=trials)
        else:
            results.update(evaluate_sysu_mm02(fv, vis, fi, ir))
    elif name in ("market-1501", "msmt17"):
        reader = R.read_market1501 if name == "market-1501" else R.read_msmt17
        q, g = reader(root, "query"), reader(root, "gallery")
        qp, qc, _ = record_arrays(q)
        gp, gc, _ = record_arrays(g)
        cmc, mAP, mINP = eval_market(pairwise_distance(feats(q, "query"), feats(g, "gallery")), qp, gp, qc, gc)
        r = EvalResult(f"{name}/visible_to_visible", info={"metric": "neg_dot", "num_query": len(q)})
        r.add_trial(cmc, mAP, mINP)
        results["visible_to_visible"] = r
    else:
        raise ValueError(f"evaluate: no test protocol for dataset {name!r}")
    summary = {f"{k}_{m}": float(v) for k, r in results.items() for m, v in r.mean.items()}
    return {**info, "results": {k: r.to_dict() for k, r in results.items()}, "summary": summary}
