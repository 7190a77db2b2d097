"""Glue for the notebooks and the command line: load a benchmark once at the training
size, and evaluate a feature function on it with the standard protocols.

A *feature function* maps uint8 images ``(N, 3, H, W)`` to L2-normalised features
``(N, D)``; :func:`model_features` builds one from a model (the image as it is, or its
gray view), :func:`fused_features` from several (concatenated, re-normalised).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import read_market1501, read_sysu_mm01, sysu_query_gallery
from .data.loading import load_images
from .data.records import Record, record_arrays
from .evaluation import eval_market, evaluate_sysu, pairwise_distance
from .training.loop import extract, fuse

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Split:
    """Records and their decoded uint8 images ``(N, 3, H, W)``."""

    records: list[Record]
    images: torch.Tensor


@dataclass
class SysuData:
    """SYSU-MM01(-synth) at one image size: training split, query, gallery candidates
    (all-search cameras; indoor is a subset)."""

    root: str
    train: Split
    query: Split
    gallery: Split


@dataclass
class MarketData:
    """Market-1501(-synth): training images (stage-1 source) and query / gallery."""

    root: str
    train: Split
    query: Split
    gallery: Split


def _split(records: Sequence[Record], size: tuple[int, int], progress: bool, desc: str, cache_dir=None) -> Split:
    return Split(list(records), load_images(records, size, progress=progress, desc=desc, cache_dir=cache_dir))


def load_sysu(root: str | Path, size: tuple[int, int], progress: bool = True, cache_dir=None) -> SysuData:
    """Read SYSU-MM01 (train = train + val ids, test) and decode every image once."""
    train = read_sysu_mm01(root, "train")
    query, gallery = sysu_query_gallery(read_sysu_mm01(root, "test"), "all")
    return SysuData(
        str(root),
        _split(train, size, progress, "SYSU train", cache_dir),
        _split(query, size, progress, "SYSU query", cache_dir),
        _split(gallery, size, progress, "SYSU gallery", cache_dir),
    )


def load_market(root: str | Path, size: tuple[int, int], progress: bool = True, cache_dir=None) -> MarketData:
    """Read Market-1501 (train, query, gallery) and decode every image once."""
    return MarketData(
        str(root),
        _split(read_market1501(root, "train"), size, progress, "Market train", cache_dir),
        _split(read_market1501(root, "query"), size, progress, "Market query", cache_dir),
        _split(read_market1501(root, "gallery"), size, progress, "Market gallery", cache_dir),
    )


def model_features(
    model: nn.Module, gray: str | None = None, batch_size: int = 256, seed: int = 0, feature: str = "bnneck"
) -> FeatureFn:
    """Feature function of one model (run on the model's device): flip-averaged,
    L2-normalised; ``gray`` feeds the gray view (``"luma"`` / ``"random_channel"``,
    seeded) instead of the image; ``feature``: ``"bnneck"`` (post-BNNeck) or
    ``"pre_bnneck"`` (the pooled GeM feature before it, the authors' test feature;
    :func:`cmamlib.features.extract_features`)."""
    dev = next(model.parameters()).device
    return lambda images: extract(model, images, dev, batch_size, gray=gray, seed=seed, feature=feature)


def fused_features(fns: Sequence[FeatureFn], how: str = "concat") -> FeatureFn:
    """Fusion of several feature functions (:func:`cmamlib.training.loop.fuse`)."""
    return lambda images: fuse([fn(images) for fn in fns], how)


def sysu_metrics(fn: FeatureFn, data: SysuData, trials: int = 10) -> dict:
    """SYSU-MM01 all-search and indoor-search (IR query -> visible gallery) of a feature
    function; returns ``{"all": EvalResult.to_dict(), "indoor": ...}``."""
    qf, gf = fn(data.query.images), fn(data.gallery.images)
    res = evaluate_sysu(qf, data.query.records, gf, data.gallery.records, modes=("all", "indoor"), trials=trials)
    return {k: v.to_dict() for k, v in res.items()}


def market_metrics(fn: FeatureFn, data: MarketData) -> dict:
    """Source-domain diagnostic: Market-1501 visible query -> visible gallery (standard
    protocol, same-id same-camera gallery entries dropped)."""
    qf, gf = fn(data.query.images), fn(data.gallery.images)
    qp, qc, _ = record_arrays(data.query.records)
    gp, gc, _ = record_arrays(data.gallery.records)
    cmc, mAP, mINP = eval_market(pairwise_distance(qf, gf), qp, gp, qc, gc)
    return {"R1": float(cmc[0]), "R5": float(cmc[min(4, len(cmc) - 1)]), "mAP": mAP, "mINP": mINP}


def brief(res: dict) -> dict:
    """``{"all": {R1, mAP, ...mean}, "indoor": ...}`` from :func:`sysu_metrics`."""
    return {k: v["mean"] for k, v in res.items()}


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# --------------------------------------------------------------------------------------
# stage-1 experiments (notebooks 01 and 02)
# --------------------------------------------------------------------------------------


def mean_std(rows: Sequence[dict], keys: Sequence[str]) -> dict:
    """``{key: mean, key_std: std}`` over per-seed rows (population std)."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k], out[k + "_std"] = float(v.mean()), float(v.std())
    return out


def sysu_row(fn: FeatureFn, sysu: SysuData, trials: int) -> dict:
    """``{all_R1, ..., indoor_mINP}`` means over the SYSU trials of a feature function."""
    res = brief(sysu_metrics(fn, sysu, trials))
    return {
        f"{mode}_{k}": v for mode, m in res.items() for k, v in m.items() if k in ("R1", "R10", "R20", "mAP", "mINP")
    }


def stage1_metrics(
    model: nn.Module, sysu: SysuData, market: MarketData | None, trials: int, feature: str = "bnneck"
) -> dict:
    """Direct transfer of an RGB-gray extractor (the image as it is, no target training):
    SYSU all / indoor R1, mAP, mINP; and the source V->V diagnostic. ``feature``:
    ``"pre_bnneck"`` (the authors' code) or ``"bnneck"`` (``CMAMConfig.test_feature``)."""
    fn = model_features(model, feature=feature)
    row = sysu_row(fn, sysu, trials)
    if market is not None:
        src = market_metrics(fn, market)
        row.update(source_R1=src["R1"], source_mAP=src["mAP"])
    return row


_TMP_SOURCE_LABELS: dict[str, Path] = {}


def source_labels_for(base, seed: int, market: MarketData, runs_dir: str | Path | None, progress: bool = True):
    """The source pseudo labels of stage 1 in classifier mode for ``seed``
    (:func:`cmamlib.training.source_labels.run_source_labels` with ``base`` and ``seed``),
    made once and cached in ``runs_dir/source_labels/seed<seed>_<key>.csv`` (``key``:
    :func:`~cmamlib.training.source_labels.source_label_key` of the clustering config, so
    every stage-1 variant of the seed shares the file and a changed base makes a new
    one); with ``runs_dir=None`` in a temporary folder.

    Returns:
        :class:`cmamlib.training.source_labels.SourceLabelsResult`.
    """
    import tempfile
    from dataclasses import replace

    from .training.source_labels import run_source_labels, source_label_config, source_label_key

    cfg = source_label_config(replace(base, seed=seed))
    name = f"seed{seed}_{source_label_key(cfg)}"
    if runs_dir is not None:
        folder = Path(runs_dir) / "source_labels"
    else:  # one temporary folder per process, so the variants of a seed still share the file
        folder = _TMP_SOURCE_LABELS.setdefault("dir", Path(tempfile.mkdtemp(prefix="cmam_source_labels_")))
    return run_source_labels(
        cfg,
        market.train.records,
        folder / f"{name}.csv",
        market.train.images,
        run_dir=folder / name if runs_dir is not None else None,
        progress=progress,
        derive=False,
    )


def stage1_run(base, variant: str, seed: int, market: MarketData, runs_dir: str | Path | None, progress: bool = True):
    """One stage-1 run (:func:`cmamlib.training.cmam.run_cmam`) of ``variant`` with
    ``seed`` on the source training images, in ``runs_dir/stage1/<variant>_seed<seed>/``
    (resumed, so a complete run is loaded instead of retrained). In classifier mode
    (``identity_loss="classifier"``) without a ``label_file``, the seed's source pseudo
    labels come from :func:`source_labels_for` (made once per seed, shared by every
    variant)."""
    from dataclasses import replace

    from .training.cmam import run_cmam, variant_config

    cfg = replace(variant_config(base, variant), seed=seed)
    if cfg.identity_loss == "classifier" and cfg.label_file is None:
        cfg = replace(cfg, label_file=str(source_labels_for(base, seed, market, runs_dir, progress).path))
    run_dir = None if runs_dir is None else Path(runs_dir) / "stage1" / f"{variant}_seed{seed}"
    return run_cmam(
        cfg, market.train.records, market.train.images, run_dir=run_dir, resume=run_dir is not None, progress=progress
    )


def stage1_jobs(base, variants: Sequence[str], seeds: Sequence[int], market: MarketData, runs_dir: str | Path) -> list:
    """:class:`cmamlib.parallel.Job` s that train what :func:`stage1_run` loads: the
    seeds' source pseudo labels (classifier mode without a label file) and each variant
    after its seed's labels."""
    from .parallel import Job
    from .training.cmam import variant_config

    jobs = []
    for s in seeds:
        after: tuple[str, ...] = ()
        if base.identity_loss == "classifier" and base.label_file is None:
            key = f"source_labels/seed{s}"
            jobs.append(Job(key, source_labels_for, (base, s, market, runs_dir, False), cost=1e9))
            after = (key,)
        for v in variants:
            cfg = variant_config(base, v)
            passes = 1 + int(cfg.use_gray_view) + int(cfg.use_aux_gray)
            cost = passes * cfg.epochs * (cfg.iters_per_epoch or 1)
            jobs.append(
                Job(f"stage1/{v}_seed{s}", stage1_run, (base, v, s, market, runs_dir, False), after=after, cost=cost)
            )
    return jobs


STAGE1_KEYS = ("all_R1", "all_mAP", "all_mINP", "indoor_R1", "indoor_mAP", "source_mAP")


def stage1_experiment(
    base,
    variants: Sequence[str],
    seeds: Sequence[int],
    sysu: SysuData,
    market: MarketData,
    runs_dir: str | Path | None,
    trials: int = 10,
    random_init: bool = True,
    progress: bool = True,
    workers: int = 0,
) -> dict:
    """Train each stage-1 variant (:data:`cmamlib.training.cmam.VARIANTS`) for each seed
    on the source training images and evaluate it by direct transfer.

    Runs live in ``runs_dir/stage1/<variant>_seed<s>/`` and are resumed when complete
    or interrupted (a run whose config changed raises instead), so notebooks 01 and 02
    share them. ``random_init`` adds the untrained network as a row. ``workers`` > 0 (with
    ``runs_dir``) trains the runs first in that many worker processes
    (:func:`cmamlib.parallel.run_jobs`), then loads and evaluates them here.

    Returns:
        ``{"rows": [{variant, seeds, <metric>, <metric>_std, ...}], "per_seed": {...},
        "histories": {variant: [per-epoch rows of the first seed]}, "seconds": {...}}``;
        in classifier mode also ``"source_labels": {seed: label quality}`` of the seeds'
        source pseudo labels (:func:`source_labels_for`, ARI / purity diagnostics).
    """
    import time

    from .models import build_model
    from .parallel import run_jobs_timed
    from .utils import seed_everything

    per_seed: dict[str, list[dict]] = {}
    histories: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    if runs_dir is not None:
        jobs = stage1_jobs(base, variants, seeds, market, runs_dir)
        if (wall := run_jobs_timed(jobs, workers, progress=progress, desc="stage 1")) is not None:
            seconds["parallel_training_wall"] = wall
    if random_init:
        rows = []
        for s in seeds:
            seed_everything(s)
            m = build_model(base.arch, width=base.width, last_stride=base.last_stride).eval()
            rows.append({"seed": s, **stage1_metrics(m, sysu, market, trials, base.test_feature)})
        per_seed["random_init"] = rows
    for name in variants:
        rows = []
        t0 = time.time()
        for s in seeds:
            res = stage1_run(base, name, s, market, runs_dir, progress)
            rows.append(
                {
                    "seed": s,
                    "train_images_per_second": res.images_per_second,
                    **stage1_metrics(res.model_rg, sysu, market, trials, base.test_feature),
                }
            )
            histories.setdefault(name, res.history)
        per_seed[name] = rows
        seconds[name] = time.time() - t0
    table = [
        {"variant": name, "seeds": [r["seed"] for r in rows], **mean_std(rows, STAGE1_KEYS)}
        for name, rows in per_seed.items()
    ]
    out = {"rows": table, "per_seed": per_seed, "histories": histories, "seconds": seconds}
    if base.identity_loss == "classifier" and base.label_file is None:  # made by stage1_run, reused here
        out["source_labels"] = {s: source_labels_for(base, s, market, runs_dir, progress).quality for s in seeds}
    return out


def config_dict(cfg) -> dict:
    """JSON-serialisable dict of a config dataclass (for metrics.json)."""
    from .training.common import config_to_dict

    return config_to_dict(cfg)


# --------------------------------------------------------------------------------------
# stage-2 experiments (notebook 03)
# --------------------------------------------------------------------------------------

#: Stage-2 rows of the results table: (stage-1 init, SelfTrainConfig overrides).
STAGE2_VARIANTS: dict[str, tuple[str | None, dict]] = {
    "full": ("cmam", {}),
    # the full method from stage 1 with a tenth of the SIM weight (notebook 02's row (iv'),
    # the stage-1 variant that learns the source best from random init)
    "full_sim005": ("cmam_sim005", {}),
    # the full method from stage 1 with F_g and F_rg drawn independently (the default
    # before CMAMConfig.shared_init)
    "full_independent_init": ("cmam_independent_init", {}),
    "no_stage1": (None, {}),
    "stage1_rgb_only": ("rgb_only", {}),
    "no_bipartite": ("cmam", {"cluster_mode": "joint"}),
    "one_model": ("cmam", {"two_models": False}),
}

STAGE2_KEYS = (
    "all_R1",
    "all_R10",
    "all_R20",
    "all_mAP",
    "all_mINP",
    "indoor_R1",
    "indoor_R10",
    "indoor_R20",
    "indoor_mAP",
    "indoor_mINP",
)


#: Suffix of the metric keys of each stage-2 test feature when it is not the reported one
#: (``SelfTrainConfig.test_feature``): ``all_mAP_fused`` is concat(A, B)'s all-search mAP
#: while the method's ``all_mAP`` is A's pre-BNNeck feature, and the other way round.
FEATURE_SUFFIX = {"fused": "fused", "a_pre_bnneck": "A_pre_bnneck"}


def stage2_feature_fns(res, cfg) -> dict[str, FeatureFn]:
    """The test features of a stage-2 run, the reported one first.

    ``"fused"``: ``fusion`` (``cfg.fusion``) of A's and B's post-BNNeck features (A's
    alone without B), the clustering feature; ``"a_pre_bnneck"``: model A alone, its
    pre-BNNeck GeM feature, flip-averaged, L2-normalised (what the authors' code reports).
    ``cfg.test_feature`` names the method's number (:data:`CODE_DEFAULTS
    <cmamlib.training.selftrain_config.CODE_DEFAULTS>` flips it with the other
    code-following defaults).

    Returns:
        ``{name: feature function}``, ``cfg.test_feature`` first.
    """
    from .training.selftrain import TEST_FEATURES, test_feature_fn

    fns = {k: test_feature_fn(res.model_a, res.model_b, k, cfg.gray_mode, cfg.fusion) for k in TEST_FEATURES}
    first = getattr(cfg, "test_feature", "fused")
    return {first: fns[first], **{k: v for k, v in fns.items() if k != first}}


def _feature_rows(fns: dict[str, FeatureFn], row_fn: Callable[[FeatureFn], dict]) -> dict:
    """The reported feature's metrics unsuffixed, every other feature's under
    ``<key>_<FEATURE_SUFFIX>``."""
    out: dict = {}
    for i, (name, fn) in enumerate(fns.items()):
        m = row_fn(fn)
        out.update(m if i == 0 else {f"{k}_{FEATURE_SUFFIX[name]}": v for k, v in m.items()})
    return out


def _extra_keys(rows: Sequence[dict], base: Sequence[str]) -> tuple[str, ...]:
    """``base`` plus the suffixed feature keys every row has (:data:`FEATURE_SUFFIX`)."""
    sfx = tuple(f"_{v}" for v in FEATURE_SUFFIX.values())
    extra = [f"{k}{s}" for s in sfx for k in base if rows and all(f"{k}{s}" in r for r in rows)]
    return tuple(base) + tuple(extra)


def stage2_jobs(
    stage1_base,
    stage2_base,
    variants: Sequence[str],
    seeds: Sequence[int],
    train: Split,
    market: MarketData,
    runs_dir: str | Path,
    run_name: Callable[[str, int], str] | None = None,
) -> list:
    """:class:`cmamlib.parallel.Job` s that train what :func:`stage2_run` loads: the
    stage-1 runs the variants start from (:func:`stage1_jobs`) and each stage-2 run
    after its stage-1 run. ``run_name(variant, seed)``: the run folder (default
    ``stage2/<variant>_seed<seed>``)."""
    from .parallel import Job

    inits = sorted({STAGE2_VARIANTS[v][0] for v in variants if STAGE2_VARIANTS[v][0] is not None})
    jobs = stage1_jobs(stage1_base, inits, seeds, market, runs_dir)
    for v in variants:
        init_variant = STAGE2_VARIANTS[v][0]
        for s in seeds:
            name = run_name(v, s) if run_name is not None else f"stage2/{v}_seed{s}"
            after = (f"stage1/{init_variant}_seed{s}",) if init_variant is not None else ()
            args = (stage1_base, stage2_base, v, s, None, market, runs_dir, False, train, name)
            jobs.append(Job(name, stage2_run, args, after=after, cost=stage2_base.epochs))
    return jobs


def supervised_job(config, train: Split, runs_dir: str | Path, name: str = "visible_infrared"):
    """The :class:`cmamlib.parallel.Job` that trains what :func:`supervised_run` loads."""
    from .parallel import Job
    from .training.supervised import supervised_run_path

    return Job(
        str(supervised_run_path(runs_dir, name, config)), supervised_run, (config, None, runs_dir, name, False, train)
    )


def stage2_experiment(
    stage1_base,
    stage2_base,
    variants: Sequence[str],
    seeds: Sequence[int],
    sysu: SysuData,
    market: MarketData,
    runs_dir: str | Path | None,
    trials: int = 10,
    progress: bool = True,
    supervised_base=None,
    workers: int = 0,
) -> dict:
    """Train each stage-2 variant (:data:`STAGE2_VARIANTS`) for each seed on the target
    training images (stage 1 first, from ``runs_dir/stage1`` when already trained) and
    evaluate them on SYSU all / indoor search: the unsuffixed metrics are
    ``stage2_base.test_feature``'s (:func:`stage2_feature_fns`: the fused features, or
    model A's pre-BNNeck feature as the authors' code reports), the other feature's carry
    the :data:`FEATURE_SUFFIX` suffix (``all_mAP_A_pre_bnneck`` / ``all_mAP_fused``),
    A's post-BNNeck feature alone the ``A_`` prefix (``A_all_R1``, ``A_all_mAP``).

    The stage-1 RGB-only init has no gray extractor: its F_rg initialises both models.
    Runs live in ``runs_dir/stage2/<variant>_seed<s>/`` (resumed when complete). With
    ``supervised_base`` (a ``SupervisedConfig`` at the stage-2 input size, e.g.
    ``calibration.model_config("visible_infrared", ...)``) the supervised upper bound is
    trained for each seed too (:func:`supervised_run`, cached in
    ``runs_dir/supervised/visible_infrared_<key>_seed<s>/``, so notebook 00's model (d)
    with the same config is loaded), as the row ``"supervised"``: the same images at the
    same size as the unsupervised rows. ``workers`` > 0 (with ``runs_dir``) trains every
    run first in that many worker processes (:func:`cmamlib.parallel.run_jobs`).

    Returns:
        ``{"rows": [...mean/std...], "per_seed": {...}, "histories": {variant: log of
        the first seed}, "seconds": {...}}``.
    """
    import time
    from dataclasses import replace

    from .parallel import run_jobs_timed
    from .training.selftrain import selftrain_features

    if supervised_base is not None and tuple(supervised_base.image_size) != tuple(stage2_base.image_size):
        raise ValueError(
            f"supervised_base.image_size {tuple(supervised_base.image_size)}: expected the stage-2 "
            f"input size {tuple(stage2_base.image_size)} (the upper bound must see the same images)"
        )
    per_seed: dict[str, list[dict]] = {}
    histories: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    unknown = [v for v in variants if v not in STAGE2_VARIANTS]
    if unknown:
        raise ValueError(f"unknown stage-2 variant {unknown[0]!r}; expected one of {sorted(STAGE2_VARIANTS)}")
    if runs_dir is not None:
        jobs = stage2_jobs(stage1_base, stage2_base, variants, seeds, sysu.train, market, runs_dir)
        if supervised_base is not None:
            jobs += [supervised_job(replace(supervised_base, seed=s), sysu.train, runs_dir) for s in seeds]
        if (wall := run_jobs_timed(jobs, workers, progress=progress, desc="stage 2")) is not None:
            seconds["parallel_training_wall"] = wall
    for name in variants:
        rows = []
        t0 = time.time()
        for s in seeds:
            res, cfg = stage2_run(stage1_base, stage2_base, name, s, sysu, market, runs_dir, progress)
            feats = _feature_rows(stage2_feature_fns(res, cfg), lambda fn: sysu_row(fn, sysu, trials))
            row = {"seed": s, "train_images_per_second": res.images_per_second, **feats}
            if res.model_b is not None:
                a_only = sysu_row(selftrain_features(res.model_a, None), sysu, trials)
                row.update({f"A_{k}": v for k, v in a_only.items() if k in ("all_R1", "all_mAP")})
            rows.append(row)
            histories.setdefault(name, res.history)
        per_seed[name] = rows
        seconds[name] = time.time() - t0
    if supervised_base is not None:
        t0 = time.time()
        rows = []
        for s in seeds:
            model = supervised_run(replace(supervised_base, seed=s), sysu, runs_dir, progress=progress)
            rows.append({"seed": s, **sysu_row(model_features(model), sysu, trials)})
        per_seed["supervised"] = rows
        seconds["supervised"] = time.time() - t0
    table = [
        {"variant": name, "seeds": [r["seed"] for r in rows], **mean_std(rows, _extra_keys(rows, STAGE2_KEYS))}
        for name, rows in per_seed.items()
    ]
    return {
        "rows": table,
        "per_seed": per_seed,
        "histories": histories,
        "seconds": seconds,
        "test_feature": stage2_base.test_feature,
    }


# --------------------------------------------------------------------------------------
# modality-gap analysis (notebook 04): one run per stage, reloaded from runs/
# --------------------------------------------------------------------------------------


def stage2_run(
    stage1_base,
    stage2_base,
    variant: str,
    seed: int,
    sysu: SysuData | None,
    market: MarketData,
    runs_dir: str | Path | None,
    progress: bool = True,
    train: Split | None = None,
    run_name: str | None = None,
):
    """One stage-2 run of ``variant`` (:data:`STAGE2_VARIANTS`) with ``seed``, exactly as
    :func:`stage2_experiment` trains it (stage 1 from ``runs_dir/stage1`` first), in
    ``runs_dir/stage2/<variant>_seed<seed>/`` (resumed: a complete run is loaded).

    ``train`` replaces ``sysu.train`` as the target training split (RegDB: one split's
    training images) and ``run_name`` the run folder ``stage2/<variant>_seed<seed>``.

    Returns:
        ``(SelfTrainResult, SelfTrainConfig)``; the run's test features are
        :func:`stage2_feature_fns` ``(res, cfg)``, the reported one
        (``cfg.test_feature``) first.
    """
    from dataclasses import replace

    from .training.selftrain import run_selftrain

    if variant not in STAGE2_VARIANTS:
        raise ValueError(f"unknown stage-2 variant {variant!r}; expected one of {sorted(STAGE2_VARIANTS)}")
    init_variant, overrides = STAGE2_VARIANTS[variant]
    init = None
    if init_variant is not None:
        s1 = stage1_run(stage1_base, init_variant, seed, market, runs_dir, progress)
        init = (s1.model_rg, s1.model_g if s1.model_g is not None else s1.model_rg)
    cfg = replace(stage2_base, seed=seed, **overrides)
    run_dir = None if runs_dir is None else Path(runs_dir) / (run_name or f"stage2/{variant}_seed{seed}")
    target = train if train is not None else sysu.train
    res = run_selftrain(
        cfg,
        target.records,
        target.images,
        init_models=init,
        run_dir=run_dir,
        resume=run_dir is not None,
        progress=progress,
    )
    return res, cfg


def supervised_run(
    config,
    sysu: SysuData | None,
    runs_dir: str | Path | None,
    name: str = "visible_infrared",
    progress: bool = True,
    train: Split | None = None,
) -> nn.Module:
    """The supervised upper bound (notebook 00's calibration model (d) with ``config``:
    all SYSU training images, identity labels), cached in
    ``runs_dir/supervised/<name>_<key>_seed<seed>/model.pt``
    (:func:`cmamlib.training.supervised.supervised_run_path`: state dict + config,
    written atomically) and loaded from there; notebook 00 caches its calibration models
    alike, so the same config and data load its model.

    Args:
        config: :class:`cmamlib.training.supervised.SupervisedConfig`, used as given
            (pass ``cross_modality_batches=True`` for the calibration's model (d)); its
            ``image_size`` must be the size ``sysu`` was loaded at.
        sysu: the benchmark (training split decoded).
        runs_dir: runs folder, or None to train without caching.
        train: another labelled training split instead of ``sysu.train`` (RegDB).

    Returns:
        the model in eval mode, on the config's device.

    Raises:
        ValueError: image size mismatch, or a cached model written with another config.
    """
    from .training.supervised import run_supervised_cached, supervised_run_path

    data = train if train is not None else sysu.train
    h, w = data.images.shape[-2:]
    if tuple(config.image_size) != (h, w):
        raise ValueError(
            f"supervised_run: config.image_size {tuple(config.image_size)} but the training images are {(h, w)}"
        )
    path = None if runs_dir is None else supervised_run_path(runs_dir, name, config)
    return run_supervised_cached(config, data.records, data.images, path, progress=progress).model


def sysu_test_set(sysu: SysuData) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """The SYSU test images of the modality-gap analysis: every infrared query and every
    visible all-search gallery candidate of the test ids.

    Returns:
        ``(images (N, 3, H, W) uint8, is_ir (N,) bool, pids (N,), camids (N,))``,
        query rows first.
    """
    images = torch.cat([sysu.query.images, sysu.gallery.images])
    pids, cams, is_ir = record_arrays(sysu.query.records + sysu.gallery.records)
    return images, is_ir, pids, cams


# --------------------------------------------------------------------------------------
# RegDB (notebook 03): one stage-2 run per split, both directions
# --------------------------------------------------------------------------------------


@dataclass
class RegdbData:
    """One RegDB(-synth) split at one image size: its training images (both
    modalities) and its test visible / thermal images."""

    root: str
    split: int
    train: Split
    visible: Split
    thermal: Split


def load_regdb(root: str | Path, split: int, size: tuple[int, int], progress: bool = True, cache_dir=None) -> RegdbData:
    """Read RegDB split ``split`` (1..10) and decode its images once."""
    from .data import read_regdb
    from .data.records import INFRARED

    train = read_regdb(root, split, "train")
    test = read_regdb(root, split, "test")
    vis = [r for r in test if r.modality != INFRARED]
    th = [r for r in test if r.modality == INFRARED]
    return RegdbData(
        str(root),
        int(split),
        _split(train, size, progress, f"RegDB {split} train", cache_dir),
        _split(vis, size, progress, f"RegDB {split} visible", cache_dir),
        _split(th, size, progress, f"RegDB {split} thermal", cache_dir),
    )


REGDB_DIRECTIONS = {"visible_to_thermal": "v2t", "thermal_to_visible": "t2v"}
REGDB_KEYS = tuple(f"{d}_{k}" for d in REGDB_DIRECTIONS.values() for k in ("R1", "R10", "R20", "mAP", "mINP"))


def regdb_row(fn: FeatureFn, data: RegdbData) -> dict:
    """``{v2t_R1, ..., t2v_mINP}`` of a feature function on one RegDB split (the whole
    other modality is the gallery, :func:`cmamlib.evaluation.evaluate_regdb`)."""
    from .evaluation import evaluate_regdb

    res = evaluate_regdb(fn(data.visible.images), data.visible.records, fn(data.thermal.images), data.thermal.records)
    out = {}
    for d, short in REGDB_DIRECTIONS.items():
        m = res[d].mean
        out.update({f"{short}_{k}": float(m[k]) for k in ("R1", "R10", "R20", "mAP", "mINP")})
    return out


def regdb_experiment(
    stage1_base,
    stage2_base,
    variants: Sequence[str],
    seeds: Sequence[int],
    regdb_root: str | Path,
    market: MarketData,
    runs_dir: str | Path | None,
    splits: Sequence[int] = tuple(range(1, 11)),
    supervised_base=None,
    progress: bool = True,
    workers: int = 0,
) -> dict:
    """Stage 2 on RegDB: for every variant (:data:`STAGE2_VARIANTS`), seed and split, one
    self-training run on the split's training images (stage 1 is the same source model
    for all splits), evaluated on the split's test images in both directions; the mean
    over splits is a seed's result (the RegDB protocol). With ``supervised_base`` (a
    ``SupervisedConfig`` with cross-modality batches) the supervised upper bound is
    trained per split and seed too, as the row ``"supervised"``. The unsuffixed metrics
    are ``stage2_base.test_feature``'s, the other feature's carry the
    :data:`FEATURE_SUFFIX` suffix (as :func:`stage2_experiment`).

    Runs live in ``runs_dir/stage2_regdb/<variant>_seed<s>_split<i>/`` and
    ``runs_dir/supervised/regdb_split<i>_visible_infrared_<key>_seed<s>/`` (resumed when
    complete; notebook 00's RegDB calibration model (d) with the same config is loaded).
    ``workers`` as in :func:`stage2_experiment`.

    Returns:
        ``{"rows": [...mean/std over seeds of the split means...], "per_seed": {variant:
        [{seed, v2t_R1, ...}]}, "per_split": {variant: {seed: [{split, ...}]}},
        "seconds": {...}}``.
    """
    import time
    from dataclasses import replace

    from .parallel import run_jobs_timed

    size = tuple(stage2_base.image_size)
    data = {i: load_regdb(regdb_root, i, size, progress=False) for i in splits}
    names = list(variants) + (["supervised"] if supervised_base is not None else [])
    per_seed: dict[str, list[dict]] = {}
    per_split: dict[str, dict[int, list[dict]]] = {}
    seconds: dict[str, float] = {}
    if runs_dir is not None:
        jobs = []
        for i, d in data.items():
            jobs += stage2_jobs(
                stage1_base,
                stage2_base,
                variants,
                seeds,
                d.train,
                market,
                runs_dir,
                run_name=lambda v, s, i=i: f"stage2_regdb/{v}_seed{s}_split{i}",
            )
            if supervised_base is not None:
                jobs += [
                    supervised_job(
                        replace(supervised_base, seed=s), d.train, runs_dir, f"regdb_split{i}_visible_infrared"
                    )
                    for s in seeds
                ]
        if (wall := run_jobs_timed(jobs, workers, progress=progress, desc="RegDB stage 2")) is not None:
            seconds["parallel_training_wall"] = wall
    bar = tqdm(total=len(names) * len(seeds) * len(splits), desc="RegDB runs", disable=not progress)
    for name in names:
        t0 = time.time()
        rows = []
        for s in seeds:
            split_rows = []
            for i, d in data.items():
                if name == "supervised":
                    model = supervised_run(
                        replace(supervised_base, seed=s),
                        None,
                        runs_dir,
                        name=f"regdb_split{i}_visible_infrared",
                        progress=False,
                        train=d.train,
                    )
                    fns = {"fused": model_features(model)}
                else:
                    res, cfg = stage2_run(
                        stage1_base,
                        stage2_base,
                        name,
                        s,
                        None,
                        market,
                        runs_dir,
                        progress=False,
                        train=d.train,
                        run_name=f"stage2_regdb/{name}_seed{s}_split{i}",
                    )
                    fns = stage2_feature_fns(res, cfg)
                split_rows.append({"split": i, **_feature_rows(fns, lambda f, d=d: regdb_row(f, d))})
                bar.update(1)
            per_split.setdefault(name, {})[s] = split_rows
            rows.append({"seed": s, **mean_std(split_rows, _extra_keys(split_rows, REGDB_KEYS))})
        per_seed[name] = rows
        seconds[name] = time.time() - t0
    bar.close()
    table = [
        {"variant": name, "seeds": [r["seed"] for r in rows], **mean_std(rows, _extra_keys(rows, REGDB_KEYS))}
        for name, rows in per_seed.items()
    ]
    return {
        "rows": table,
        "per_seed": per_seed,
        "per_split": per_split,
        "seconds": seconds,
        "splits": list(splits),
        "test_feature": stage2_base.test_feature,
    }
