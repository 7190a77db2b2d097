"""What limits stage 2's cross-modality pseudo labels: clustering or matching?

For several feature sources on the SYSU-MM01-synth training split (fused, camera-centred
features, exactly as stage 2 clusters them), two numbers:

* **oracle-cluster matching**: the per-modality clusters are the *true* identities (an
  oracle, diagnostics only), their centroids are matched by
  :func:`cmamlib.labeling.match_clusters` with stage 2's cost; the fraction of pairs
  that join the same identity (chance: 1 / number of identities). This isolates how
  well the features align the modalities.
* **stage 2's own labels**: Jaccard + DBSCAN per modality and the same matching
  (:func:`cmamlib.training.selftrain.cluster_and_match`): clusters, purity, fraction of
  correct pairs (also with ``match_unequal="drop"``).
* the oracle matching again with the visible images' luma views through the same models
  (infrared unchanged): how much a gray view would help the matching; and with each
  model's half of the fused feature alone (model A on the image, model B on its gray
  view): which model aligns the modalities; and with each camera's features
  standardised (mean and per-dimension spread) instead of only centred: whether a
  second-order shift between cameras is what misaligns them.

Feature sources: random init, the stage-1 pairs (CMAM, CMAM with F_g drawn
independently of F_rg, CMAM with SIM 0.05, RGB only), the final stage-2 pairs of the
full method and its two investigation variants, and the supervised V+IR upper bound (one
model, its features twice). Reuses the runs that ``make reproduce`` cached in ``runs/``
(trains what is missing). Writes ``reports/probes/matching.json``.

    python investigations/probe_matching.py [--data data] [--runs runs] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cmamlib import calibration, experiments
from cmamlib.clustering import camera_centre, label_quality
from cmamlib.data.records import record_arrays
from cmamlib.data.transforms import gray_luma
from cmamlib.labeling import cluster_centroids, match_clusters
from cmamlib.models import build_model
from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from cmamlib.training.cmam import CMAMConfig
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig, cluster_and_match, pair_accuracy, selftrain_features
from cmamlib.training.supervised import SupervisedConfig


def oracle_matching(x: torch.Tensor, is_ir: np.ndarray, pids: np.ndarray, cfg: SelfTrainConfig) -> dict:
    """Match the true-identity centroids of the two modalities (ids present in both)."""
    both = np.intersect1d(pids[~is_ir], pids[is_ir])
    keep_v = ~is_ir & np.isin(pids, both)
    keep_i = is_ir & np.isin(pids, both)
    vc, vids = cluster_centroids(x[torch.from_numpy(keep_v)], pids[keep_v])
    ic, iids = cluster_centroids(x[torch.from_numpy(keep_i)], pids[keep_i])
    m = match_clusters(vc, ic, cfg.match_cost, cfg.match_unequal)
    pv, pi = np.asarray(vids)[m.pairs[:, 0]], np.asarray(iids)[m.pairs[:, 1]]
    return {
        "ids": int(len(both)),
        "pairs": int(m.num_pairs),
        "correct_fraction": float(np.mean(pv == pi)),
        "chance": 1.0 / len(both),
    }


def method_labels(x: torch.Tensor, is_ir: np.ndarray, cams: np.ndarray, pids: np.ndarray, cfg: SelfTrainConfig) -> dict:
    lab = cluster_and_match(x, is_ir, cams, cfg)
    out = {}
    for side, idx, labels in (("vis", lab.vis_idx, lab.vis_labels), ("ir", lab.ir_idx, lab.ir_labels)):
        q = label_quality(labels, pids[idx])
        out.update({f"{side}_{k}": v for k, v in q.items()})
    out["pairs"] = int(len(lab.pairs))
    out["pairs_correct_fraction"] = (  # stage 2's own per-epoch diagnostic; 0 without pairs
        pair_accuracy(lab.pairs, lab.vis_labels, lab.ir_labels, pids[lab.vis_idx], pids[lab.ir_idx])
        if len(lab.pairs)
        else 0.0
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/probes/matching.json")
    args = ap.parse_args()
    s1, s2 = CMAMConfig(**S1_EARLIER), SelfTrainConfig(**S2_EARLIER)
    sysu = experiments.load_sysu(Path(args.data) / "SYSU-MM01-synth", s2.image_size, progress=False)
    market = experiments.load_market(Path(args.data) / "Market-1501-synth", s1.image_size, progress=False)
    pids, cams, is_ir = record_arrays(sysu.train.records)  # pids: diagnostics only

    torch.manual_seed(args.seed)
    sources = {
        "random init": (build_model(s2.arch, width=s2.width).eval(), build_model(s2.arch, width=s2.width).eval())
    }
    for variant in ("cmam", "cmam_independent_init", "cmam_sim005", "rgb_only"):
        r = experiments.stage1_run(s1, variant, args.seed, market, args.runs, progress=False)
        sources[f"stage 1 {variant}"] = (r.model_rg, r.model_g if r.model_g is not None else r.model_rg)
    for variant in ("full", "full_independent_init", "full_sim005"):
        res, _ = experiments.stage2_run(s1, s2, variant, args.seed, sysu, market, args.runs, progress=False)
        sources[f"stage 2 {variant} (final)"] = (res.model_a, res.model_b)
    sup_cfg = calibration.model_config("visible_infrared", SupervisedConfig(seed=args.seed, image_size=s2.image_size))
    sup = experiments.supervised_run(sup_cfg, sysu, args.runs, progress=False)
    sources["supervised V+IR (upper bound)"] = (sup, sup)

    gray_uint8 = (gray_luma(sysu.train.images) * 255).round().to(torch.uint8)

    def centred(f: torch.Tensor) -> torch.Tensor:  # as cluster_and_match does
        return camera_centre(f, cams) if s2.camera_centering else f

    rows = []
    for name, (a, b) in sources.items():
        fn = selftrain_features(a, b, s2.gray_mode, s2.fusion, seed=args.seed)
        raw = fn(sysu.train.images)
        x = centred(raw)
        # the visible images' luma views through the same pair (infrared rows unchanged)
        gray_raw = raw.clone()
        gray_raw[torch.from_numpy(~is_ir)] = fn(gray_uint8[torch.from_numpy(~is_ir)])
        xg = centred(gray_raw)
        half = raw.shape[1] // 2 if s2.fusion == "concat" else None
        per_model = (
            {}
            if half is None
            else {
                f"oracle_model_{k}": oracle_matching(centred(part), is_ir, pids, s2)
                for k, part in (("a", raw[:, :half]), ("b", raw[:, half:]))
            }
        )
        row = {
            "source": name,
            "oracle": oracle_matching(x, is_ir, pids, s2),
            "oracle_gray_visible": oracle_matching(xg, is_ir, pids, s2),
            **per_model,
            "oracle_camera_standardised": oracle_matching(camera_centre(raw, cams, standardise=True), is_ir, pids, s2),
            "method": method_labels(raw, is_ir, cams, pids, s2),
            "method_unequal_drop": method_labels(raw, is_ir, cams, pids, replace(s2, match_unequal="drop")),
        }
        rows.append(row)
        o, m = row["oracle"], row["method"]
        print(
            f"{name:32s} oracle-cluster pairs correct "
            f"{100 * o['correct_fraction']:5.1f}% (chance {100 * o['chance']:.1f}%; "
            f"visible as luma: {100 * row['oracle_gray_visible']['correct_fraction']:5.1f}%; "
            + "".join(f"{k[7:]} alone {100 * row[k]['correct_fraction']:5.1f}%; " for k in per_model)
            + f"cameras standardised {100 * row['oracle_camera_standardised']['correct_fraction']:5.1f}%) | "
            f"DBSCAN: vis {m['vis_clusters']} clusters purity {m['vis_purity']:.2f}, ir {m['ir_clusters']} purity "
            f"{m['ir_purity']:.2f}, noise {m['vis_noise_fraction']:.2f} / {m['ir_noise_fraction']:.2f}, pairs correct "
            f"{100 * m['pairs_correct_fraction']:.1f}% (unequal=drop: "
            f"{100 * row['method_unequal_drop']['pairs_correct_fraction']:.1f}%)",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
