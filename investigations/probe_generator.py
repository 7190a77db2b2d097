"""Which generator knob raises the supervised upper bound (calibration model (d))
without closing the modality gap (model (b)): SYSU-MM01-synth is regenerated per
variant (default preset with one or more :class:`SynthConfig` fields changed) in a
temporary folder, and the calibration models are trained on it (notebook-00 recipe).
Not part of ``make bench`` (about 2 minutes per model and seed on 2 cores); appends
rows to ``reports/probes/generator.json``.

    python investigations/probe_generator.py --variant baseline "pattern_freq=(3.5,8)" \
        [--models visible_infrared visible_only] [--seeds 0] [--image-size 128 64]
"""

from __future__ import annotations

import argparse
import ast
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from cmamlib import calibration
from cmamlib.data import synth
from cmamlib.training.supervised import SupervisedConfig


def parse_variant(text: str) -> dict:
    """``"baseline"`` -> {}; ``"a=1;b=(2,3)"`` -> {"a": 1, "b": (2, 3)}."""
    if text == "baseline":
        return {}
    out = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", default=["baseline"])
    ap.add_argument("--models", nargs="+", default=["visible_infrared", "visible_only", "visible_gray"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="training input size of the calibration models (default: SupervisedConfig's)",
    )
    ap.add_argument("--out", default="reports/probes/generator.json")
    args = ap.parse_args()
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for text in args.variant:
        cfg = replace(synth.PRESETS["default"], **parse_variant(text))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            synth.generate(tmp, cfg, seed=args.data_seed, datasets=("sysu",), progress=False)
            gen_s = time.time() - t0
            base = (
                SupervisedConfig() if args.image_size is None else SupervisedConfig(image_size=tuple(args.image_size))
            )
            res = calibration.run_calibration(
                Path(tmp) / "SYSU-MM01-synth",
                seeds=tuple(args.seeds),
                config=base,
                models=tuple(args.models),
                progress=False,
            )
        row = {
            "variant": text,
            "image_size": list(base.image_size),
            "data_seed": args.data_seed,
            "seeds": args.seeds,
            "generate_seconds": gen_s,
            "seconds": res["seconds"],
            "summary": res["summary"],
            "checks": res["checks"],
        }
        rows.append(row)
        cells = [
            f"{m} R1 {100 * s['R1']['mean']:.1f} mAP {100 * s['mAP']['mean']:.1f}" for m, s in res["summary"].items()
        ]
        print(f"{text}: " + " | ".join(cells) + f"  ({res['seconds']['total']:.0f} s)", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
