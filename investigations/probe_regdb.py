"""What limits the supervised upper bound on RegDB-synth (notebook 03 reports every
RegDB-synth row, the upper bound included, near chance): the calibration's model (d)
recipe (identity labels, cross-modality batches) trained on one RegDB-synth split per
setting and evaluated in both directions; and, for comparison, within-modality
retrieval (thermal -> thermal, visible -> visible, the query's own image excluded) of
the same model, which says whether the thermal images carry identity at all.

Settings: notebook 03's RegDB upper bound (ResNet-18 width 16, 64x32, 6 x 25 steps),
then more steps and a larger input. Generator variants (``--variant``, the default
preset with :class:`SynthConfig` fields changed, as ``investigations/probe_generator.py``)
regenerate RegDB-synth in a temporary folder; ``baseline`` reads ``--data``. Not part
of ``make bench`` (about 15 minutes for the command below on 2 cores); writes
``reports/probes/regdb.json``.

    python investigations/probe_regdb.py [--data data] [--splits 1 2] [--seed 0] \
        [--variant baseline "thermal_luma_weight=-0.8;thermal_random=0.1"] [--only SETTING ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from probe_generator import parse_variant  # investigations/ is sys.path[0] when run as a script

from cmamlib import calibration, experiments
from cmamlib.data import synth
from cmamlib.evaluation import eval_market, pairwise_distance
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig
from cmamlib.training.supervised import SupervisedConfig

#: setting -> change applied to notebook 03's RegDB upper-bound config
SETTINGS: dict[str, Callable[[SupervisedConfig], SupervisedConfig]] = {
    "notebook 03 (6 x 25 steps, 64x32)": lambda c: c,
    "24 x 25 steps": lambda c: replace(c, epochs=24),
    "48 x 25 steps": lambda c: replace(c, epochs=48),
    "24 x 25 steps, 128x64": lambda c: replace(c, epochs=24, image_size=(128, 64)),
}


def within_modality(fn, split: experiments.Split) -> dict:
    """R1 / mAP of every image of one modality against the others of that modality."""
    feats = fn(split.images)
    pids = np.array([r.pid for r in split.records])
    own = np.arange(len(pids))  # a unique "camera" per image: the Market rule then drops only the query itself
    cmc, mAP, _ = eval_market(pairwise_distance(feats, feats), pids, pids, own, own)
    return {"R1": float(cmc[0]), "mAP": float(mAP)}


def run_settings(root: Path, variant: str, splits: list[int], seed: int, only: list[str] | None) -> list[dict]:
    """One row per setting: the mean over ``splits`` of the RegDB and within-modality metrics."""
    # notebook 03's RegDB upper bound: stage 2's backbone and input size, 6 x 25 steps
    s2 = SelfTrainConfig(**S2_EARLIER)
    base = calibration.model_config(
        "visible_infrared",
        SupervisedConfig(arch=s2.arch, width=s2.width, image_size=s2.image_size, epochs=6, iters_per_epoch=25),
    )
    rows = []
    for name, change in SETTINGS.items():
        if only and name not in only:
            continue
        cfg = replace(change(base), seed=seed)
        t0 = time.time()
        per_split = []
        for i in splits:
            d = experiments.load_regdb(root, i, tuple(cfg.image_size), progress=False)
            model = experiments.supervised_run(cfg, None, None, progress=False, train=d.train)
            fn = functools.cache(experiments.model_features(model))  # one extraction per test set (tensors hash by id)
            within = {
                f"{m}_within_{k}": v
                for m, sp in (("v", d.visible), ("t", d.thermal))
                for k, v in within_modality(fn, sp).items()
            }
            per_split.append({"split": i, **experiments.regdb_row(fn, d), **within})
        row = {
            "variant": variant,
            "setting": name,
            "seed": seed,
            "splits": splits,
            "seconds": round(time.time() - t0, 1),
            "test_ids": len({r.pid for r in d.visible.records}),
            **{k: sum(r[k] for r in per_split) / len(per_split) for k in per_split[0] if k != "split"},
            "per_split": per_split,
        }
        rows.append(row)
        print(
            f"{variant} | {name:34s} V->T R1 {100 * row['v2t_R1']:5.1f} mAP {100 * row['v2t_mAP']:5.1f} | "
            f"T->V R1 {100 * row['t2v_R1']:5.1f} mAP {100 * row['t2v_mAP']:5.1f} "
            f"| within V R1 {100 * row['v_within_R1']:5.1f} "
            f"T R1 {100 * row['t_within_R1']:5.1f}  ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--splits", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=0, help="generator seed of the --variant datasets")
    ap.add_argument("--variant", nargs="+", default=["baseline"])
    ap.add_argument("--only", nargs="*", default=None, help="names of SETTINGS to run")
    ap.add_argument("--out", default="reports/probes/regdb.json")
    ap.add_argument("--append", action="store_true", help="keep the rows (and commands) already in --out")
    args = ap.parse_args()
    out = Path(args.out)
    old = json.loads(out.read_text()) if args.append and out.exists() else {"commands": [], "rows": []}
    rows = old["rows"]
    for text in args.variant:
        if text == "baseline":
            rows += run_settings(Path(args.data) / "RegDB-synth", text, args.splits, args.seed, args.only)
            continue
        cfg = replace(synth.PRESETS["default"], **parse_variant(text))
        with tempfile.TemporaryDirectory() as tmp:
            synth.generate(tmp, cfg, seed=args.data_seed, datasets=("regdb",), progress=False)
            rows += run_settings(Path(tmp) / "RegDB-synth", text, args.splits, args.seed, args.only)
    command = "python investigations/probe_regdb.py " + shlex.join(sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commands": old["commands"] + [command], "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
