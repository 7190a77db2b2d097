"""Which of the authors' stage-1 choices matter? One change at a time.

Stage 1's defaults follow the authors' released code (``CODE_DEFAULTS`` of
:mod:`cmamlib.training.cmam`); before, they were the earlier reconstruction
(``EARLIER_DEFAULTS``). This probe trains the stage-1 variants (default: (iv) CMAM and
(ii) one network on RGB + gray) from the earlier defaults with **one** code choice
switched on at a time, and with all of them (the defaults), and reports the direct
transfer to SYSU-MM01-synth with both test features (pre- and post-BNNeck). Every row in
classifier mode reads the same source pseudo labels per seed, those notebook 02 trains
on (``experiments.source_labels_for`` with the default config, shared through
``--labels-runs``); the memory-mode rows re-cluster every epoch as the earlier defaults did.

Rows: ``earlier``; ``+identity_loss`` (fixed labels + circle classifier with label-smoothed
CE, no triplet); ``+triplet`` (``triplet_weight`` 1, soft margin, post-BNNeck features);
``+view_forward``; ``+kl_reduction``; ``+schedule`` (two runs); ``+memory_init``
(memory mode only); ``+memory_init+view_mean`` (also F_rg's memory updated with one row per
image, ``rg_memory_update="view_mean"``); ``code`` (all of them: the defaults).

Writes ``reports/probes/code_defaults.json``; runs live in
``runs/probe_code_defaults/<row>/stage1/`` (resumed). About 2 minutes per row and seed
for the two variants on 2 cores.

    python investigations/probe_code_defaults.py [--data data] [--seeds 0] [--variants cmam rgb_gray_one_net]
        [--labels-runs runs] [--runs runs/probe_code_defaults] [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from cmamlib import experiments
from cmamlib.training.cmam import CODE_DEFAULTS, EARLIER_DEFAULTS, CMAMConfig, run_cmam, variant_config

#: One change at a time: row name -> the code values switched on over ``EARLIER_DEFAULTS``.
ROWS: dict[str, dict] = {
    "earlier": {},
    "+identity_loss": {"identity_loss": "classifier"},
    "+triplet": {k: CODE_DEFAULTS[k] for k in ("triplet_weight", "triplet_margin", "triplet_feature")},
    "+view_forward": {"view_forward": CODE_DEFAULTS["view_forward"]},
    "+kl_reduction": {"kl_reduction": CODE_DEFAULTS["kl_reduction"]},
    "+schedule": {"schedule": CODE_DEFAULTS["schedule"]},
    "+memory_init": {"memory_init": CODE_DEFAULTS["memory_init"]},
    # memory mode: F_rg's memory rows one per image (mean of the two views) instead of RGB then gray
    "+memory_init+view_mean": {"memory_init": CODE_DEFAULTS["memory_init"], "rg_memory_update": "view_mean"},
    "code": {k: v for k, v in CODE_DEFAULTS.items() if k != "test_feature"},
}

FEATURES = ("pre_bnneck", "bnneck")


def row_config(row: str) -> CMAMConfig:
    """The stage-1 config of ``row``: the earlier defaults plus the row's code values."""
    return CMAMConfig(**{**EARLIER_DEFAULTS, **ROWS[row]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["cmam", "rgb_gray_one_net"])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--labels-runs", default="runs", help="the source pseudo labels (shared with notebook 02)")
    ap.add_argument("--runs", default="runs/probe_code_defaults")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--out", default="reports/probes/code_defaults.json")
    args = ap.parse_args()

    default = CMAMConfig()
    root = Path(args.data)
    sysu = experiments.load_sysu(root / "SYSU-MM01-synth", default.image_size)
    market = experiments.load_market(root / "Market-1501-synth", default.image_size)
    # the source pseudo labels of every seed, made only when a classifier-mode row needs them
    needs_labels = any(row_config(r).identity_loss == "classifier" for r in args.rows)
    labels = {
        s: experiments.source_labels_for(default, s, market, args.labels_runs, progress=False)
        for s in (args.seeds if needs_labels else [])
    }
    out: dict = {
        "question": "stage 1 from the earlier defaults with one code default at a time (direct transfer)",
        "seeds": args.seeds,
        "trials": args.trials,
        "rows": ROWS,
        "source_labels": {s: {"path": str(r.path), **r.quality} for s, r in labels.items()},
        "results": [],
    }
    for row in args.rows:
        for variant in args.variants:
            for s in args.seeds:
                cfg = replace(variant_config(row_config(row), variant), seed=s)
                if cfg.identity_loss == "classifier":
                    cfg = replace(cfg, label_file=str(labels[s].path))
                run_dir = Path(args.runs) / row / "stage1" / f"{variant}_seed{s}"
                t0 = time.time()
                res = run_cmam(
                    cfg, market.train.records, market.train.images, run_dir=run_dir, resume=True, progress=False
                )
                entry = {"row": row, "variant": variant, "seed": s, "seconds": time.time() - t0}
                for feature in FEATURES:
                    m = experiments.stage1_metrics(res.model_rg, sysu, market, args.trials, feature)
                    entry[feature] = {k: m[k] for k in experiments.STAGE1_KEYS}
                out["results"].append(entry)
                pre, post = entry["pre_bnneck"], entry["bnneck"]
                print(
                    f"{row:15s} {variant:18s} seed {s}: all mAP {100 * pre['all_mAP']:5.1f} (post-BN "
                    f"{100 * post['all_mAP']:5.1f}), source mAP {100 * pre['source_mAP']:5.1f}",
                    flush=True,
                )
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
