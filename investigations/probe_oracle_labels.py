"""Where does stage 2 lose against the upper bound: its clusters, its cross-modality
pairs, or its training loop? The full method (notebook 03's row, stage 1 from
``runs/stage1``) retrained with parts of its pseudo labels replaced by the truth:

* ``full``: as notebook 03 (its run in ``runs/stage2`` is reused when complete);
* ``oracle_pairs``: its own per-modality DBSCAN clusters, but the cross-modality pairs
  are the right ones: a visible and an infrared cluster are paired when their majority
  true identities agree (one pair per identity: the largest cluster of each side);
  clusters without a partner stay modality-specific;
* ``oracle_clusters``: per modality, the true identities as clusters, but the
  cross-modality pairs found by the method's own bipartite matching of their centroids;
* ``oracle_labels``: every training image labelled by its true identity, one label
  space for both modalities (what stage 2's loop reaches with perfect pseudo labels).

A **diagnostic**: target identities are read here, by replacing
:func:`cmamlib.training.selftrain.cluster_and_match` for the probe's runs only; the
library's training never reads them. Writes ``reports/probes/oracle_labels.json``; runs
live in ``runs/probe_oracle_labels/``. Not part of ``make bench`` (about 2 minutes per
row and seed on 2 cores).

    python investigations/probe_oracle_labels.py [--data data] [--seeds 0 1]
        [--rows full oracle_pairs oracle_clusters oracle_labels] [--epochs 24]
        [--set FIELD=VALUE ...] [--out reports/probes/oracle_labels_e24.json]

``--set FIELD=VALUE`` (repeatable) changes a ``SelfTrainConfig`` field of every row, as in
``probe_stage2_length.py``; the run folders carry the setting.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from probe_stage2_length import parse_sets

from cmamlib import experiments
from cmamlib.clustering import cluster_majority
from cmamlib.data.readers import relabel
from cmamlib.training import selftrain
from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from cmamlib.training.cmam import CMAMConfig
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig, selftrain_features

ROWS = ("full", "oracle_pairs", "oracle_clusters", "oracle_labels")
DIAGNOSTICS = ("pairs", "pairs_correct_fraction", "unified_purity", "vis_clusters", "ir_clusters")
_original = selftrain.cluster_and_match


def largest_cluster_per_identity(labels: np.ndarray, true_ids: np.ndarray) -> dict[int, int]:
    """``{true id: cluster}``: for every identity that is the majority of some cluster,
    the largest such cluster (ties: the smaller cluster id). ``labels`` ``(n,)``, -1 noise."""
    best: dict[int, tuple[int, int]] = {}
    for c, (major, _, size) in sorted(cluster_majority(labels, true_ids).items()):
        if major not in best or size > best[major][0]:
            best[major] = (size, c)
    return {k: c for k, (_, c) in best.items()}


def oracle_wrapper(mode: str, true_ids: np.ndarray):
    """A drop-in for :func:`cmamlib.training.selftrain.cluster_and_match` whose pairs
    (``mode="oracle_pairs"``), per-modality clusters (``"oracle_clusters"``) or labels
    (``"oracle_labels"``) come from ``true_ids`` ``(N,)``, record order."""

    def wrapped(features, is_ir, cams, cfg, epoch=0, kmeans_k=None, label_overrides=None):
        el = _original(features, is_ir, cams, cfg, epoch, kmeans_k, label_overrides)
        is_ir_ = np.asarray(is_ir, dtype=bool)
        vis_idx, ir_idx = np.flatnonzero(~is_ir_), np.flatnonzero(is_ir_)
        if mode == "oracle_pairs":
            v = largest_cluster_per_identity(el.vis_labels, true_ids[vis_idx])
            i = largest_cluster_per_identity(el.ir_labels, true_ids[ir_idx])
            pairs = np.array([[v[p], i[p]] for p in sorted(set(v) & set(i))], dtype=np.int64).reshape(-1, 2)
            labels = selftrain.shared_labels(el.vis_labels, el.ir_labels, pairs, is_ir_)
            return replace(el, pairs=pairs, labels=labels, similarity=np.zeros(len(pairs)))
        if mode == "oracle_clusters":  # true clusters per modality, the method's own matching
            vis_l, ir_l = relabel(true_ids[vis_idx]), relabel(true_ids[ir_idx])
            pairs = selftrain.match_modalities(el.features[vis_idx], el.features[ir_idx], vis_l, ir_l, cfg)
            labels = selftrain.shared_labels(vis_l, ir_l, pairs, is_ir_)
            return replace(
                el,
                raw_vis_labels=vis_l,
                raw_ir_labels=ir_l,
                vis_labels=vis_l,
                ir_labels=ir_l,
                pairs=pairs,
                labels=labels,
                similarity=np.zeros(len(pairs)),
            )
        ids = relabel(true_ids)  # one label per identity, both modalities
        vis_l, ir_l = ids[vis_idx], ids[ir_idx]
        both = np.intersect1d(vis_l, ir_l)
        return replace(
            el,
            raw_vis_labels=vis_l,
            raw_ir_labels=ir_l,
            vis_labels=vis_l,
            ir_labels=ir_l,
            pairs=np.stack([both, both], 1).astype(np.int64),
            labels=ids,
            similarity=np.zeros(len(both)),
        )

    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=None, help="stage-2 DBSCAN epochs (default: the preset's 6)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--out", default="reports/probes/oracle_labels.json")
    args = ap.parse_args()
    overrides, shown = parse_sets(args.sets, SelfTrainConfig)
    s1, s2 = CMAMConfig(**S1_EARLIER), replace(SelfTrainConfig(**S2_EARLIER), **overrides)
    if args.epochs is not None:
        s2 = replace(s2, epochs=args.epochs)
    suffix = ("" if args.epochs is None else f"_e{args.epochs}") + "".join(f"_{k}-{v}" for k, v in shown.items())
    setting = ",".join(f"{k}={v}" for k, v in shown.items()) or "default"
    sysu = experiments.load_sysu(Path(args.data) / "SYSU-MM01-synth", s2.image_size, progress=False)
    market = experiments.load_market(Path(args.data) / "Market-1501-synth", s1.image_size, progress=False)
    true_ids = np.array([r.pid for r in sysu.train.records], dtype=np.int64)
    rows = []
    for row_name in args.rows:
        for seed in args.seeds:
            t0 = time.time()
            selftrain.cluster_and_match = _original if row_name == "full" else oracle_wrapper(row_name, true_ids)
            try:
                run_name = (
                    None if row_name == "full" and not suffix else f"probe_oracle_labels/{row_name}{suffix}_seed{seed}"
                )
                res, cfg = experiments.stage2_run(
                    s1, s2, "full", seed, sysu, market, args.runs, progress=False, run_name=run_name
                )
            finally:
                selftrain.cluster_and_match = _original
            m = experiments.sysu_row(
                selftrain_features(res.model_a, res.model_b, cfg.gray_mode, cfg.fusion), sysu, args.trials
            )
            diag = {k: res.history[-1].get(k) for k in DIAGNOSTICS}
            rows.append(
                {
                    "row": row_name,
                    "setting": setting,
                    "epochs": s2.epochs,
                    "seed": seed,
                    "seconds": time.time() - t0,
                    **m,
                    "last_epoch": diag,
                }
            )
            print(
                f"{row_name:14s} seed {seed}: all R1 {100 * m['all_R1']:5.1f} "
                f"mAP {100 * m['all_mAP']:5.1f} | last epoch {diag} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    summary = []
    for name in args.rows:
        sel = [r for r in rows if r["row"] == name]
        summary.append(
            {
                "row": name,
                "setting": setting,
                "seeds": [r["seed"] for r in sel],
                **experiments.mean_std(sel, ("all_R1", "all_mAP", "indoor_mAP")),
            }
        )
        print(f"{name:14s} all mAP {100 * summary[-1]['all_mAP']:5.1f} ± {100 * summary[-1]['all_mAP_std']:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "rows": rows, "stage2_base": experiments.config_dict(s2)}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
