"""What limits the supervised upper bound (calibration model (d)) on the synthetic
benchmark: one seed of model (d) per setting, SYSU all-search and indoor (10 trials).

Settings: the notebook-00 recipe (ResNet-18 width 16, 64x32, 40 x 25 steps, luma gray
view p 0.5, cross-modality batches) and one change each: larger input (96x48,
128x64), twice the steps, CAJ channel exchange (p 0.5), random-channel instead of
luma gray, 8 instances per identity instead of 4, lr 1e-3, base width 32; and stage 2's
step counts (6 x 40 = the preset's 240 steps, 24 x 40 = 960), what the supervised recipe
reaches in the steps stage 2 trains. Not part of ``make bench`` (about 14 minutes on 2 cores); writes
``reports/probes/upper_bound.json``.

    python investigations/probe_upper_bound.py [--data data] [--seed 0] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cmamlib import calibration
from cmamlib.data.transforms import AugmentConfig
from cmamlib.training.supervised import SupervisedConfig

#: setting -> change applied to calibration model (d)'s training config
SETTINGS: dict[str, Callable[[SupervisedConfig], SupervisedConfig]] = {
    "notebook 00 recipe (64x32)": lambda c: c,
    "96x48 input": lambda c: replace(c, image_size=(96, 48)),
    "128x64 input": lambda c: replace(c, image_size=(128, 64)),
    "80 epochs (2,000 steps)": lambda c: replace(c, epochs=80),
    "channel exchange p 0.5": lambda c: replace(c, augment=AugmentConfig(channel_aug=0.5)),
    "random-channel gray": lambda c: replace(c, gray_mode="random_channel"),
    "8 ids x 8 (4 V + 4 IR)": lambda c: replace(c, num_instances=8),
    "lr 1e-3": lambda c: replace(c, lr=1e-3),
    "width 32": lambda c: replace(c, width=32),
    "6 x 40 steps (stage 2's preset count)": lambda c: replace(c, epochs=6, iters_per_epoch=40),
    "24 x 40 steps (stage 2 at 24 epochs)": lambda c: replace(c, epochs=24, iters_per_epoch=40),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="names of SETTINGS to run")
    ap.add_argument("--out", default="reports/probes/upper_bound.json")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --out")
    args = ap.parse_args()
    root = Path(args.data) / "SYSU-MM01-synth"
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if args.append and out.exists() else []
    for name, change in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        cfg = change(calibration.model_config("visible_infrared", SupervisedConfig(seed=args.seed)))
        t0 = time.time()
        res = calibration.run_calibration(
            root,
            seeds=(args.seed,),
            config=cfg,
            models=("visible_infrared",),
            trials=10,
            progress=False,
            model_configs={"visible_infrared": cfg},
        )
        by = {r["protocol"]: r for r in res["table"]}
        row = {
            "setting": name,
            "seed": args.seed,
            "seconds": time.time() - t0,
            "image_size": list(cfg.image_size),
            "epochs": cfg.epochs,
            "gray_mode": cfg.gray_mode,
            "channel_aug": cfg.augment.channel_aug,
            **{f"{'all' if 'all' in p else 'indoor'}_{k}": by[p][k]["mean"] for p in by for k in ("R1", "mAP")},
        }
        rows.append(row)
        print(
            f"{name:30s} all R1 {100 * row['all_R1']:5.1f} mAP {100 * row['all_mAP']:5.1f} | indoor R1 "
            f"{100 * row['indoor_R1']:5.1f} mAP {100 * row['indoor_mAP']:5.1f}  ({row['seconds']:.0f} s)",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
