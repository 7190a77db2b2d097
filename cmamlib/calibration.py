"""Calibration of the synthetic benchmark with supervised models (identity labels are
used here for calibration only; never by the unsupervised method).

Four supervised models on SYSU-MM01-synth, each over several seeds:

(a) ``ir_only``: infrared training images only; infrared query -> infrared gallery of
    the *other* infrared camera (cam 3 -> cam 6 and cam 6 -> cam 3, standard CMC, every
    image of the other camera as gallery, mean of the two directions).  Shows that
    infrared carries identity.  Target: Rank-1 >= 0.80.
(b) ``visible_only``: visible training images only; SYSU all-search (IR -> visible).
    Shows a real modality gap.  Target: mAP <= half of (d)'s.
(c) ``visible_gray``: visible images, each replaced by its gray (BT.601 luma) view with
    probability 0.5.  Shows gray bridges part of the gap.  Target: mAP >= (b) + 0.10
    and below (d).
(d) ``visible_infrared``: all training images, cross-modality P x K batches, and the
    gray (luma) view of visible images with probability 0.5 (the gray / channel
    augmentation of the strongest supervised VI-ReID baselines, e.g. CAJ).  The
    supervised upper bound, reported at the input size the method trains at (the
    earlier target "R1 >= 0.70 at 128x64" is withdrawn: the calibration runs at the
    stage-2 size).

:func:`run_regdb_calibration` does the same for RegDB-synth: a supervised visible +
thermal model (the (d) recipe) and a visible-only one per split, both directions.
Target: the former >= 0.60 R1 in both directions, the latter at most half of it.

:func:`model_config` gives each model's training config from a base config; notebooks
03 and 04 build the upper bound with it too.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import INFRARED, VISIBLE, read_sysu_mm01, sysu_query_gallery
from .data.loading import iterate_batches, load_images
from .evaluation import eval_regdb, evaluate_sysu, pairwise_distance
from .features import extract_features
from .parallel import Job, run_jobs_timed
from .training.supervised import SupervisedConfig, run_supervised_cached, supervised_run_path

MODELS = {
    "ir_only": "(a) supervised IR only",
    "visible_only": "(b) supervised visible only",
    "visible_gray": "(c) supervised visible + gray view",
    "visible_infrared": "(d) supervised visible + infrared (upper bound)",
}


def model_config(name: str, base: SupervisedConfig | None = None) -> SupervisedConfig:
    """The training config of calibration model ``name`` (a key of :data:`MODELS`)
    derived from ``base`` (default :class:`SupervisedConfig`): (c) adds the luma gray
    view with probability 0.5, (d) cross-modality batches and the same gray view."""
    base = base or SupervisedConfig()
    if name in ("ir_only", "visible_only"):
        return base
    if name == "visible_gray":
        return replace(base, gray_prob=0.5, gray_mode="luma")
    if name == "visible_infrared":
        return replace(base, cross_modality_batches=True, gray_prob=0.5, gray_mode="luma")
    raise ValueError(f"unknown calibration model {name!r}; expected one of {list(MODELS)}")


def ir_to_ir_other_camera(feats: torch.Tensor, records) -> dict[str, float]:
    """Infrared query -> infrared gallery of the other IR camera (3 <-> 6), both
    directions, standard CMC over valid queries; returns the mean R1 / mAP / mINP.

    Args:
        feats: (Q, D) L2-normalised features of every infrared test image.
        records: the Q records (camids 3 and 6).
    """
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    out = []
    for a, b in ((3, 6), (6, 3)):
        qa, gb = cams == a, cams == b
        if not qa.any() or not gb.any():
            continue
        dist = pairwise_distance(feats[torch.from_numpy(qa)], feats[torch.from_numpy(gb)])
        cmc, mAP, mINP = eval_regdb(dist, pids[qa], pids[gb])
        out.append((cmc[0], cmc[min(4, len(cmc) - 1)], mAP, mINP))
    if not out:
        raise ValueError("ir_to_ir_other_camera: need infrared test images in both cam 3 and cam 6")
    m = np.mean(np.array(out), axis=0)
    return {"R1": float(m[0]), "R5": float(m[1]), "mAP": float(m[2]), "mINP": float(m[3])}


def run_calibration(
    sysu_root: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    config: SupervisedConfig | None = None,
    models: Sequence[str] = tuple(MODELS),
    trials: int = 10,
    progress: bool = True,
    model_configs: dict[str, SupervisedConfig] | None = None,
    runs_dir: str | Path | None = None,
    workers: int = 0,
) -> dict:
    """Train and evaluate the calibration models; returns a JSON-serialisable dict with
    per-seed results, mean/std table rows and the (a)-(d) checks.

    ``runs_dir``: cache each trained model in
    ``runs_dir/supervised/<model>_<key>_seed<s>/model.pt``
    (:func:`cmamlib.training.supervised.supervised_run_path`) and load it from there on a
    rerun; the metrics are recomputed from the model, the training time is the cached
    one. ``workers`` > 0 (with ``runs_dir``) trains the models first in that many worker
    processes (:func:`cmamlib.parallel.run_jobs`).

    ``model_configs`` optionally replaces :func:`model_config`'s training config of some
    models (probes of a recipe; images are decoded at ``config.image_size``, which such a
    config must share)."""
    cfg = config or SupervisedConfig()
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown calibration models {unknown}; expected a subset of {list(MODELS)}")
    train = read_sysu_mm01(sysu_root, "train")
    test = read_sysu_mm01(sysu_root, "test")
    query, gallery = sysu_query_gallery(test)
    size = cfg.image_size
    t0 = time.time()
    train_img = load_images(train, size, progress=progress, desc="train images")
    q_img = load_images(query, size, progress=progress, desc="query images")
    g_img = load_images(gallery, size, progress=progress, desc="gallery images")
    per_seed: dict[str, list[dict]] = {m: [] for m in models}
    timing: dict[str, float] = {}
    plans = []  # (name, training records, images, config of seed s, cache path)
    for name in models:
        if name == "ir_only":
            keep = [i for i, r in enumerate(train) if r.modality == INFRARED]
        elif name in ("visible_only", "visible_gray"):
            keep = [i for i, r in enumerate(train) if r.modality == VISIBLE]
        else:
            keep = list(range(len(train)))
        mcfg = (model_configs or {}).get(name) or model_config(name, cfg)
        if tuple(mcfg.image_size) != tuple(size):
            raise ValueError(f"model_configs[{name!r}].image_size={mcfg.image_size}: expected config.image_size={size}")
        recs = [train[i] for i in keep]
        imgs = train_img[torch.as_tensor(keep)]
        for seed in seeds:
            scfg = replace(mcfg, seed=seed)
            path = None if runs_dir is None else supervised_run_path(runs_dir, name, scfg)
            plans.append((name, recs, imgs, scfg, path))
    if runs_dir is not None:
        jobs = [Job(str(p[4]), run_supervised_cached, (p[3], p[1], p[2], p[4], False), cost=len(p[1])) for p in plans]
        if (wall := run_jobs_timed(jobs, workers, progress=progress, desc="calibration")) is not None:
            timing["parallel_training_wall"] = wall
    for name, recs, imgs, scfg, path in plans:
        ts = time.time()
        res = run_supervised_cached(scfg, recs, imgs, path, progress=progress)
        qf = extract_features(res.model, iterate_batches(q_img, 256), progress=False)
        row: dict = {"seed": scfg.seed, "train_seconds": res.seconds, "train_images_per_second": res.images_per_second}
        if name == "ir_only":
            row["ir_to_ir"] = ir_to_ir_other_camera(qf, query)
        else:
            gf = extract_features(res.model, iterate_batches(g_img, 256), progress=False)
            ev = evaluate_sysu(qf, query, gf, gallery, modes=("all", "indoor"), trials=trials)
            row["all"] = ev["all"].mean
            row["indoor"] = ev["indoor"].mean
        per_seed[name].append(row)
        timing[name] = timing.get(name, 0.0) + time.time() - ts
    table, summary = [], {}
    for name in models:
        rows = per_seed[name]
        proto = "ir_to_ir" if name == "ir_only" else "all"
        stats = {}
        for k in ("R1", "mAP"):
            v = np.array([r[proto][k] for r in rows])
            stats[k] = {"mean": float(v.mean()), "std": float(v.std()), "values": v.tolist()}
        summary[name] = stats
        table.append(
            {
                "model": MODELS[name],
                "protocol": "IR->IR other camera" if name == "ir_only" else "SYSU all-search IR->V",
                **stats,
            }
        )
        if name != "ir_only":
            st = {}
            for k in ("R1", "mAP"):
                v = np.array([r["indoor"][k] for r in rows])
                st[k] = {"mean": float(v.mean()), "std": float(v.std()), "values": v.tolist()}
            table.append({"model": MODELS[name], "protocol": "SYSU indoor-search IR->V", **st})
    checks = calibration_checks(summary)
    for row in table:
        for key, label in (
            ("ir_only", "(a)"),
            ("visible_only", "(b)"),
            ("visible_gray", "(c)"),
            ("visible_infrared", "(d)"),
        ):
            if row["model"] == MODELS[key] and row["protocol"] != "SYSU indoor-search IR->V" and label[1] in checks:
                row["check"] = f"{label} {'pass' if checks[label[1]]['pass'] else 'FAIL'}: {checks[label[1]]['rule']}"
    return {
        "seeds": list(seeds),
        "backbone": f"{cfg.arch} width {cfg.width}, {size[0]}x{size[1]}, {cfg.epochs} epochs",
        "config": {k: (v if not hasattr(v, "__dict__") else vars(v)) for k, v in vars(cfg).items()},
        "counts": {"train": len(train), "query": len(query), "gallery_candidates": len(gallery)},
        "per_seed": per_seed,
        "summary": summary,
        "table": table,
        "checks": checks,
        "seconds": {"total": time.time() - t0, **timing},
    }


def calibration_checks(summary: dict) -> dict:
    """The (a)-(d) properties of the foundation issue, on the mean over seeds."""
    out = {}
    m = lambda name, k: summary[name][k]["mean"]  # noqa: E731
    if "ir_only" in summary:
        out["a"] = {"rule": "IR->IR R1 >= 0.80", "value": m("ir_only", "R1"), "pass": m("ir_only", "R1") >= 0.80}
    if "visible_infrared" in summary:
        out["d"] = {  # reported, not a target: the upper bound at the training size
            "rule": "reported: all-search R1 of the upper bound at the training size",
            "value": m("visible_infrared", "R1"),
            "pass": True,
        }
        if "visible_only" in summary:
            b, d = m("visible_only", "mAP"), m("visible_infrared", "mAP")
            out["b"] = {"rule": "mAP(b) <= mAP(d) / 2", "value": b, "limit": d / 2, "pass": b <= d / 2}
        if "visible_gray" in summary and "visible_only" in summary:
            b, c, d = m("visible_only", "mAP"), m("visible_gray", "mAP"), m("visible_infrared", "mAP")
            out["c"] = {"rule": "mAP(b) + 0.10 <= mAP(c) < mAP(d)", "value": c, "pass": (c >= b + 0.10) and (c < d)}
    return out


def run_regdb_calibration(
    regdb_root: str | Path,
    seeds: Sequence[int] = (0, 1),
    config: SupervisedConfig | None = None,
    splits: Sequence[int] = tuple(range(1, 11)),
    runs_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = 0,
) -> dict:
    """Calibration of RegDB-synth: per seed and split, the supervised visible + thermal
    model (recipe (d), :func:`model_config`) and a visible-only model, evaluated in both
    directions on the split's test half (the RegDB protocol, whole other modality as
    gallery); a seed's result is the mean over ``splits``.

    ``runs_dir``: models cached as
    ``runs_dir/supervised/regdb_split<i>_<model>_<key>_seed<s>/model.pt``
    (:func:`cmamlib.training.supervised.supervised_run_path`); ``workers`` as in
    :func:`run_calibration`.

    Returns:
        ``{"seeds", "splits", "per_seed": {model: [{seed, v2t_R1, ...}]}, "summary":
        {model: {key: {mean, std, values}}}, "checks": {"regdb": {...}}, "seconds"}``;
        the check: (d) >= 0.60 R1 in both directions and visible-only <= half of it.
    """
    from .experiments import REGDB_KEYS, Split, load_regdb, mean_std, model_features, regdb_row

    cfg = config or SupervisedConfig()
    size = tuple(cfg.image_size)
    t0 = time.time()
    per_seed: dict[str, list[dict]] = {"visible_infrared": [], "visible_only": []}
    data = {i: load_regdb(regdb_root, i, size, progress=False) for i in splits}
    plans = []  # (name, seed, split, training split, config, cache path)
    for name in per_seed:
        for seed in seeds:
            for i, d in data.items():
                train = d.train
                if name == "visible_only":
                    keep = [k for k, r in enumerate(train.records) if r.modality == VISIBLE]
                    train = Split([train.records[k] for k in keep], train.images[torch.as_tensor(keep)])
                scfg = replace(model_config(name, cfg), seed=seed)
                path = None if runs_dir is None else supervised_run_path(runs_dir, f"regdb_split{i}_{name}", scfg)
                plans.append((name, seed, i, train, scfg, path))
    parallel_wall = None
    if runs_dir is not None:
        jobs = [Job(str(p[5]), run_supervised_cached, (p[4], p[3].records, p[3].images, p[5], False)) for p in plans]
        parallel_wall = run_jobs_timed(jobs, workers, progress=progress, desc="RegDB calibration")
    bar = tqdm(total=len(plans), desc="RegDB calibration", disable=not progress)
    split_rows: dict[tuple[str, int], list[dict]] = {}
    for name, seed, i, train, scfg, path in plans:
        res = run_supervised_cached(scfg, train.records, train.images, path, progress=False)
        split_rows.setdefault((name, seed), []).append({"split": i, **regdb_row(model_features(res.model), data[i])})
        bar.update(1)
    bar.close()
    for (name, seed), rows in split_rows.items():
        per_seed[name].append({"seed": seed, **mean_std(rows, REGDB_KEYS)})
    summary = {}
    for name, rows in per_seed.items():
        summary[name] = {}
        for k in ("v2t_R1", "t2v_R1", "v2t_mAP", "t2v_mAP"):
            v = np.array([r[k] for r in rows])
            summary[name][k] = {"mean": float(v.mean()), "std": float(v.std()), "values": v.tolist()}
    d_r1 = min(summary["visible_infrared"][k]["mean"] for k in ("v2t_R1", "t2v_R1"))
    b_r1 = max(summary["visible_only"][k]["mean"] for k in ("v2t_R1", "t2v_R1"))
    checks = {
        "regdb": {
            "rule": "supervised V+T R1 >= 0.60 both directions; visible-only <= half",
            "value": d_r1,
            "visible_only": b_r1,
            "pass": bool(d_r1 >= 0.60 and b_r1 <= d_r1 / 2),
        }
    }
    return {
        "seeds": list(seeds),
        "splits": list(splits),
        "backbone": f"{cfg.arch} width {cfg.width}, {size[0]}x{size[1]}, {cfg.epochs} x {cfg.iters_per_epoch} steps",
        "per_seed": per_seed,
        "summary": summary,
        "checks": checks,
        "seconds": time.time() - t0,
        **({"parallel_training_wall_seconds": parallel_wall} if parallel_wall is not None else {}),
    }
