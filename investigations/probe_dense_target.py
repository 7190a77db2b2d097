"""Does a denser target (more images per identity, closer to SYSU-MM01's ~56 visible and
~30 infrared per identity) fix stage 2's pseudo labels? SYSU-MM01-synth is regenerated
with ``sysu_vis_per_cam`` / ``sysu_ir_per_cam`` images per camera (default 6 / 9: about
20 visible and 15 infrared per identity, against 10 and 5 in the default preset) and one
stage-2 run of a variant is trained on it (stage 1 reused from ``runs/stage1``).
Prints the final metrics and the per-epoch pseudo-label quality; writes
``reports/probes/dense_target.json``. About 2 minutes per variant on 2 cores.
``--set1 FIELD=VALUE`` changes a ``CMAMConfig`` field of stage 1 (retrained in a
folder named by the setting, as ``probe_stage2_length.py`` does): ``--set1
shared_init=false`` gives the independently drawn stage-1 networks this probe was first
measured with.

    python investigations/probe_dense_target.py [--variant full_sim005] [--seed 0] [--set1 FIELD=VALUE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from probe_stage2_length import parse_sets, stage1_runs_dir

from cmamlib import experiments
from cmamlib.data import synth
from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from cmamlib.training.cmam import CMAMConfig
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig, selftrain_features

QUALITY = ("vis_clusters", "ir_clusters", "unified_noise_fraction", "vis_purity", "ir_purity", "pairs_correct_fraction")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", default=["full_sim005"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vis-per-cam", type=int, default=6)
    ap.add_argument("--ir-per-cam", type=int, default=9)
    ap.add_argument("--data", default="data/dense", help="where the denser SYSU-MM01-synth is written")
    ap.add_argument("--market", default="data/Market-1501-synth")
    ap.add_argument("--runs", default="runs")
    ap.add_argument(
        "--set1",
        dest="sets1",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a CMAMConfig field of stage 1, e.g. shared_init=false",
    )
    ap.add_argument("--out", default="reports/probes/dense_target.json")
    args = ap.parse_args()
    overrides1, shown1 = parse_sets(args.sets1, CMAMConfig)
    stage1_setting = ",".join(f"{k}={v}" for k, v in shown1.items()) or "default"
    runs_dir = stage1_runs_dir(Path(args.runs), shown1)
    root = Path(args.data)
    cfg = replace(synth.PRESETS["default"], sysu_vis_per_cam=args.vis_per_cam, sysu_ir_per_cam=args.ir_per_cam)
    counts = synth.generate(root, cfg, seed=0, datasets=("sysu",), progress=False)["counts"]
    s1, s2 = replace(CMAMConfig(**S1_EARLIER), **overrides1), SelfTrainConfig(**S2_EARLIER)
    sysu = experiments.load_sysu(root / "SYSU-MM01-synth", s2.image_size, progress=False)
    market = experiments.load_market(Path(args.market), s1.image_size, progress=False)
    rows = []
    for variant in args.variant:
        t0 = time.time()
        name = f"probe_dense/{variant}_v{args.vis_per_cam}_i{args.ir_per_cam}_seed{args.seed}"
        res, c2 = experiments.stage2_run(
            s1, s2, variant, args.seed, sysu, market, runs_dir, progress=False, run_name=name
        )
        metrics = experiments.sysu_row(selftrain_features(res.model_a, res.model_b, c2.gray_mode, c2.fusion), sysu, 10)
        history = [{k: e.get(k) for k in ("epoch",) + QUALITY} for e in res.history]
        rows.append(
            {
                "variant": variant,
                "stage1_setting": stage1_setting,
                "seed": args.seed,
                "metrics": metrics,
                "history": history,
                "seconds": time.time() - t0,
            }
        )
        print(
            f"{variant} (stage 1 {stage1_setting}): all R1 "
            f"{100 * metrics['all_R1']:.1f} mAP {100 * metrics['all_mAP']:.1f}",
            flush=True,
        )
        for e in history:
            print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in e.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"counts": counts, "vis_per_cam": args.vis_per_cam, "ir_per_cam": args.ir_per_cam, "rows": rows}, indent=1
        )
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
