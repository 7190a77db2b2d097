"""Are the confident cross-modality pairs the right ones? Pair accuracy by centroid similarity.

At the end of a finished stage-2 run (a preset's full method, default ``cpu-long``, as
``make reproduce-long`` trains it in ``runs/<preset>/``), the final models' features are
clustered and matched exactly as a training epoch does
(:func:`cmamlib.training.selftrain.cluster_and_match` on
:func:`~cmamlib.training.selftrain.selftrain_epoch_features`, the last epoch's gray-view
seed: the labels one more epoch would train on), the ``(visible,
infrared)`` cluster pairs are sorted by the cosine similarity of their centroids, and the
fraction of right pairs (majority true identities agree; diagnostics only, training never
reads them) is reported for the most similar 10%, 20%, ... of the pairs, with the
similarity at each cut. A ``match_threshold`` near a cut keeps that share of the pairs.

Second, which features could align the modalities at all: **oracle-cluster matching**
(the per-modality clusters are the *true* identities, diagnostics only; their
camera-centred centroids matched by :func:`cmamlib.labeling.match_clusters` with stage
2's cost and Ward merge; fraction of pairs joining the same identity, chance 1 / 240)
for the fused feature (what stage 2 matches), model A alone, model B alone (on the gray
view of every image), and model A fed the visible images' gray view too.

Trains what is missing (the runs are resumed / loaded from ``runs/<preset>/``). Writes
``reports/probes/pair_similarity_<preset>.json``.

    python investigations/probe_pair_similarity.py [--preset cpu-long] [--seeds 0 1] [--data data] [--runs runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from probe_matching import oracle_matching  # investigations/ is sys.path[0] when run as a script

from cmamlib import experiments
from cmamlib.clustering import camera_centre
from cmamlib.data.records import record_arrays
from cmamlib.presets import load_config
from cmamlib.training.loop import extract, fuse
from cmamlib.training.selftrain import cluster_and_match, pair_accuracy, selftrain_epoch_features

CUTS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-long")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--data", default="data")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    c = load_config(args.preset)
    sysu = experiments.load_sysu(Path(args.data) / "SYSU-MM01-synth", c.stage2.image_size, progress=False)
    market = experiments.load_market(Path(args.data) / "Market-1501-synth", c.stage1.image_size, progress=False)
    true, cams, is_ir = record_arrays(sysu.train.records)
    rows = []
    for seed in args.seeds:
        res, cfg = experiments.stage2_run(
            c.stage1, c.stage2, "full", seed, sysu, market, Path(args.runs) / args.preset, progress=False
        )
        last = cfg.total_epochs - 1
        f_a, f_b, fused = selftrain_epoch_features(res.model_a, res.model_b, sysu.train.images, cfg, epoch=last)
        el = cluster_and_match(fused, is_ir, cams, cfg, epoch=last)
        order = np.argsort(-el.similarity, kind="stable")
        pairs, sim = el.pairs[order], el.similarity[order]
        cuts = []
        for q in CUTS:
            k = max(1, int(round(q * len(pairs))))
            acc = pair_accuracy(pairs[:k], el.vis_labels, el.ir_labels, true[~is_ir], true[is_ir])
            cuts.append({"top_fraction": q, "pairs": k, "correct_fraction": acc, "min_similarity": float(sim[k - 1])})
            print(
                f"seed {seed}: most similar {q:4.0%} of {len(pairs)} pairs ({k:3d}): {acc:5.1%} right, "
                f"similarity >= {sim[k - 1]:.3f}",
                flush=True,
            )
        f_a_gray = f_a.clone()
        vis = torch.from_numpy(np.flatnonzero(~is_ir))
        f_a_gray[vis] = extract(
            res.model_a,
            sysu.train.images[vis],
            fused.device,
            cfg.eval_batch_size,
            gray=cfg.gray_mode,
            seed=cfg.seed * 1000 + last,
        )
        sources = {
            "fused": fused,
            "A": f_a,
            "B (gray view)": f_b,
            "A with visible gray views, fused with B": fuse([f_a_gray, f_b], cfg.fusion),
        }
        oracle = {}
        for name, x in sources.items():
            oracle[name] = oracle_matching(camera_centre(x, cams), is_ir, true, cfg)["correct_fraction"]
            print(f"seed {seed}: oracle-cluster matching on {name}: {oracle[name]:.1%} right pairs", flush=True)
        rows.append(
            {"seed": seed, "epoch": last, "pairs": int(len(pairs)), "cuts": cuts, "oracle_cluster_pairs": oracle}
        )
    out = Path(args.out or f"reports/probes/pair_similarity_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
