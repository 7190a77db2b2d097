"""How much identity do the features that stage 2 clusters carry? For each stage's
features of the SYSU-MM01-synth *training* images (what stage 2 clusters and matches),
the fraction of an image's k nearest neighbours that share its identity:

* ``vis`` / ``ir``: within one modality (what the per-modality DBSCAN sees), and
  ``vis_other_cam`` / ``ir_other_cam`` with the image's own camera left out of the
  gallery (a cluster must span cameras to follow a person);
* ``ir_to_vis``: an infrared image's nearest visible images (what the bipartite matching
  of cluster centroids must bridge);
* ``chance``: the same fraction for a random ranking (same-id gallery images over the
  gallery size, averaged over the queries).

Features are L2-normalised and centred per camera as stage 2 clusters them
(``SelfTrainConfig.camera_centering``); the image itself is never its own neighbour.
Feature sets: stage 1 (CMAM, notebook 02's default) F_rg on the image, F_g on its
random-channel gray, and their fusion (stage 2's first-epoch features); stage 2's full
method, A alone and fused (its last weights); the supervised upper bound of notebook 03.
All are read from ``--runs`` (trained when missing, as the notebooks train them).

A **diagnostic**: it reads the target identities; training never does. Not part of
``make bench`` (a minute once the runs exist). Writes ``reports/probes/knn_precision.json``.

    python investigations/probe_knn_precision.py [--data data] [--runs runs] [--seeds 0 1] [--k 5]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cmamlib import calibration, experiments
from cmamlib.clustering import camera_centre
from cmamlib.data.records import record_arrays
from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from cmamlib.training.cmam import CMAMConfig
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig, selftrain_features
from cmamlib.training.supervised import SupervisedConfig

KEYS = ("vis", "vis_other_cam", "ir", "ir_other_cam", "ir_to_vis")


def knn_precision(
    x: torch.Tensor,
    pids: np.ndarray,
    cams: np.ndarray,
    query: np.ndarray,
    gallery: np.ndarray,
    k: int,
    other_camera: bool = False,
) -> tuple[float, float]:
    """``(precision, chance)``: mean over the ``query`` rows of the fraction of their
    ``k`` nearest ``gallery`` rows (Euclidean on ``x`` ``(N, D)``; the row itself, and
    with ``other_camera`` its camera, excluded) with the query's identity, and the same
    fraction for a random ranking. ``query`` / ``gallery``: ``(N,)`` bool masks."""
    qi, gi = np.flatnonzero(query), np.flatnonzero(gallery)
    excluded = qi[:, None] == gi[None, :]
    if other_camera:
        excluded |= cams[qi][:, None] == cams[gi][None, :]
    d = torch.cdist(x[torch.from_numpy(qi)], x[torch.from_numpy(gi)])
    d[torch.from_numpy(excluded)] = float("inf")
    nn = d.topk(k, largest=False).indices.numpy()
    same = pids[gi][None, :] == pids[qi][:, None]
    chance = ((same & ~excluded).sum(1) / (~excluded).sum(1)).mean()
    return float((pids[gi][nn] == pids[qi][:, None]).mean()), float(chance)


def precisions(x: torch.Tensor, pids: np.ndarray, cams: np.ndarray, is_ir: np.ndarray, k: int) -> dict[str, float]:
    """The five :data:`KEYS` precisions (and ``<key>_chance``) of camera-centred ``x``."""
    x = camera_centre(torch.nn.functional.normalize(x, dim=1), cams)
    out = {}
    for key, q, g, other in (
        ("vis", ~is_ir, ~is_ir, False),
        ("vis_other_cam", ~is_ir, ~is_ir, True),
        ("ir", is_ir, is_ir, False),
        ("ir_other_cam", is_ir, is_ir, True),
        ("ir_to_vis", is_ir, ~is_ir, False),
    ):
        out[key], out[f"{key}_chance"] = knn_precision(x, pids, cams, q, g, k, other)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default="reports/probes/knn_precision.json")
    args = ap.parse_args()
    s1, s2 = CMAMConfig(**S1_EARLIER), SelfTrainConfig(**S2_EARLIER)
    sysu = experiments.load_sysu(Path(args.data) / "SYSU-MM01-synth", s2.image_size, progress=False)
    market = experiments.load_market(Path(args.data) / "Market-1501-synth", s1.image_size, progress=False)
    pids, cams, is_ir = record_arrays(sysu.train.records)
    sup_base = calibration.model_config(
        "visible_infrared", SupervisedConfig(arch=s2.arch, width=s2.width, image_size=s2.image_size)
    )
    rows = []
    for seed in args.seeds:
        st1 = experiments.stage1_run(s1, "cmam", seed, market, args.runs, progress=False)
        st2, cfg = experiments.stage2_run(s1, s2, "full", seed, sysu, market, args.runs, progress=False)
        sup = experiments.supervised_run(replace(sup_base, seed=seed), sysu, args.runs, progress=False)
        sets = {
            "stage 1 F_rg (image)": selftrain_features(st1.model_rg, None),
            "stage 1 F_g (gray view)": experiments.model_features(st1.model_g, gray="random_channel"),
            "stage 1 fused (stage 2's first clustering)": selftrain_features(
                st1.model_rg, st1.model_g, cfg.gray_mode, cfg.fusion
            ),
            "stage 2 full, A alone": selftrain_features(st2.model_a, None),
            "stage 2 full, fused": selftrain_features(st2.model_a, st2.model_b, cfg.gray_mode, cfg.fusion),
            "supervised V+IR upper bound": experiments.model_features(sup),
        }
        for name, fn in sets.items():
            p = precisions(fn(sysu.train.images), pids, cams, is_ir, args.k)
            rows.append({"features": name, "seed": seed, **p})
            print(f"seed {seed} {name:44s} " + " ".join(f"{key} {100 * p[key]:5.1f}" for key in KEYS), flush=True)
    summary = []
    for name in dict.fromkeys(r["features"] for r in rows):
        sel = [r for r in rows if r["features"] == name]
        summary.append(
            {
                "features": name,
                "seeds": [r["seed"] for r in sel],
                **experiments.mean_std(sel, [*KEYS, *(f"{key}_chance" for key in KEYS)]),
            }
        )
    print("chance: " + " ".join(f"{key} {100 * summary[0][key + '_chance']:.1f}" for key in KEYS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"k": args.k, "summary": summary, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
