"""Is stage 2 limited by its short CPU schedule? The full method from the SIM-0.05
stage 1 (notebook 03's best row) and the strongest ablation (stage-1 RGB-only init),
trained for the CPU preset's 6 stage-2 epochs and for longer, on SYSU-MM01-synth.

Reports all-search R1 / mAP and the last epoch's pseudo-label diagnostics (fraction
of correct cross-modality pairs, unified purity). Not part of ``make bench`` (about
half an hour on 2 cores); writes ``reports/probes/stage2_length.json``. Runs live in
``runs/probe_stage2_length/`` (stage 1 is shared with the notebooks' ``runs/stage1``).

    python investigations/probe_stage2_length.py [--data data] [--seeds 0 1] [--epochs 6 18] [--defaults code]

``--defaults code`` starts from the configs' own defaults (the authors' code, as notebooks 02 /
03 run them) instead of ``EARLIER_DEFAULTS``, and reports model A's pre-BNNeck feature (the
notebook's number) with the fused feature beside it.

``--set FIELD=VALUE`` (repeatable) changes a ``SelfTrainConfig`` field for every run
(value parsed as JSON, else a string), e.g. ``--set gray_mode=luma``, or a field of a
nested config, e.g. ``--set augment.channel_aug=0.5`` (the rest of it at its default); the rows and the
run folders carry the setting. ``--set1 FIELD=VALUE`` changes a ``CMAMConfig`` field of
the stage-1 init runs, which then live in ``runs/probe_stage2_length/stage1_<setting>/``
instead of the notebooks' ``runs/stage1``. ``--cluster-features a`` clusters and matches
model A's features instead of the fused ones (a probe-only patch).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from cmamlib import experiments
from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from cmamlib.training.cmam import CMAMConfig
from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from cmamlib.training.selftrain import SelfTrainConfig, selftrain_features

DIAGNOSTICS = ("pairs_correct_fraction", "unified_purity", "unified_ari", "vis_clusters", "ir_clusters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, nargs="+", default=[6, 18])
    ap.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="default: full_sim005 stage1_rgb_only (earlier) / full stage1_rgb_only (code)",
    )
    ap.add_argument(
        "--defaults",
        choices=("earlier", "code"),
        default="earlier",
        help="both stages' base: EARLIER_DEFAULTS (the probes before, fused post-BNNeck feature) or the "
        "configs' defaults (the authors' code, as notebooks 02 / 03: model A's pre-BNNeck feature reported)",
    )
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--set1", dest="sets1", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument(
        "--cluster-features",
        choices=("fused", "a"),
        default="fused",
        help="what stage 2 clusters and matches: the fused feature (the method) or model A's alone "
        "(a probe-only patch of selftrain.selftrain_epoch_features)",
    )
    ap.add_argument("--out", default="reports/probes/stage2_length.json")
    args = ap.parse_args()
    if args.cluster_features == "a":
        _cluster_on_model_a()
    code = args.defaults == "code"
    s1, s2 = (CMAMConfig(), SelfTrainConfig()) if code else (CMAMConfig(**S1_EARLIER), SelfTrainConfig(**S2_EARLIER))
    if args.variants is None:
        args.variants = ["full", "stage1_rgb_only"] if code else ["full_sim005", "stage1_rgb_only"]
    overrides, shown = parse_sets(args.sets, SelfTrainConfig)
    overrides1, shown1 = parse_sets(args.sets1, CMAMConfig)
    s1, s2 = replace(s1, **overrides1), replace(s2, **overrides)
    if args.cluster_features != "fused":
        shown["cluster_features"] = args.cluster_features
    setting = (
        ",".join([*(f"stage1.{k}={v}" for k, v in shown1.items()), *(f"{k}={v}" for k, v in shown.items())])
        or "default"
    )
    tag = "".join(f"_{k}-{v}" for k, v in shown.items()).translate(
        str.maketrans("", "", " []()")
    )  # eps=[0.6, 0.5] -> eps-0.6,0.5
    if code:
        setting, tag = f"code:{setting}", f"_code{tag}"
    runs_dir = stage1_runs_dir(Path(args.runs), shown1)
    run_prefix = "" if overrides1 else "probe_stage2_length/"
    sysu = experiments.load_sysu(Path(args.data) / "SYSU-MM01-synth", s2.image_size, progress=False)
    market = experiments.load_market(Path(args.data) / "Market-1501-synth", s1.image_size, progress=False)
    rows = []
    for variant in args.variants:
        for epochs in args.epochs:
            for seed in args.seeds:
                t0 = time.time()
                try:
                    res, cfg = experiments.stage2_run(
                        s1,
                        replace(s2, epochs=epochs),
                        variant,
                        seed,
                        sysu,
                        market,
                        runs_dir,
                        progress=False,
                        run_name=run_name(variant, epochs, tag, seed, run_prefix),
                    )
                except RuntimeError as e:  # e.g. too few pseudo identities for a batch: a result, not a crash
                    rows.append(
                        {
                            "variant": variant,
                            "setting": setting,
                            "epochs": epochs,
                            "seed": seed,
                            "seconds": time.time() - t0,
                            "stopped": str(e),
                        }
                    )
                    print(f"{variant:16s} {setting} {epochs:3d} epochs seed {seed}: stopped: {e}", flush=True)
                    continue
                if code:  # the notebook's number (cfg.test_feature, model A pre-BNNeck) and the fused one
                    fns = experiments.stage2_feature_fns(res, cfg)
                    m = experiments.sysu_row(next(iter(fns.values())), sysu, 10)
                    m["all_mAP_fused"] = (
                        experiments.sysu_row(fns["fused"], sysu, 10)["all_mAP"] if "fused" in fns else None
                    )
                else:
                    m = experiments.sysu_row(
                        selftrain_features(res.model_a, res.model_b, cfg.gray_mode, cfg.fusion), sysu, 10
                    )
                last = res.history[-1]
                diag = {k: last.get(k) for k in DIAGNOSTICS}
                row = {
                    "variant": variant,
                    "setting": setting,
                    "epochs": epochs,
                    "seed": seed,
                    "seconds": time.time() - t0,
                    "all_R1": m["all_R1"],
                    "all_mAP": m["all_mAP"],
                    "indoor_mAP": m["indoor_mAP"],
                    **({"all_mAP_fused": m["all_mAP_fused"]} if code else {}),
                    "last_epoch": diag,
                }
                rows.append(row)
                print(
                    f"{variant:16s} {setting} {epochs:3d} epochs seed {seed}: all R1 {100 * m['all_R1']:5.1f} mAP "
                    f"{100 * m['all_mAP']:5.1f} | last epoch {diag} ({row['seconds']:.0f} s)",
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"rows": rows, "stage1_base": experiments.config_dict(s1), "stage2_base": experiments.config_dict(s2)},
            indent=1,
        )
    )
    print("wrote", out)


def run_name(variant: str, epochs: int, tag: str, seed: int, prefix: str = "probe_stage2_length/") -> str:
    """A stage-2 run's folder under the runs folder: ``<prefix><variant>_e<epochs><tag>_seed<seed>``
    (``tag`` the settings, e.g. ``_code`` for the code's defaults unchanged)."""
    return f"{prefix}{variant}_e{epochs}{tag}_seed{seed}"


def _cluster_on_model_a() -> None:
    """Make stage 2 cluster and match model A's features instead of the fused ones
    (``selftrain_epoch_features`` returns ``(f_a, f_b, fused)``; ``fused`` feeds only the
    clustering), for this process only."""
    from cmamlib.training import selftrain

    original = selftrain.selftrain_epoch_features

    def a_only(*args, **kwargs):
        f_a, f_b, _ = original(*args, **kwargs)
        return f_a, f_b, f_a

    selftrain.selftrain_epoch_features = a_only


def stage1_runs_dir(runs: Path, shown1: dict) -> Path:
    """The runs folder for stage 1 changed by ``--set1`` settings (``shown1`` from
    :func:`parse_sets`): ``runs`` itself without any (notebook 02's cached stage 1), else
    ``runs/probe_stage2_length/stage1_<field>-<value>_...``, so each setting's stage 1 is
    trained once and shared by the probes."""
    if not shown1:
        return runs
    return runs / "probe_stage2_length" / ("stage1_" + "_".join(f"{k}-{v}" for k, v in shown1.items()))


def parse_sets(texts: list[str], config_class: type) -> tuple[dict, dict]:
    """``FIELD=VALUE`` texts -> ``(overrides for dataclasses.replace, {name: value as
    shown in rows and run folders})``; nested settings of one field (``augment.flip=0``,
    ``augment.pad=2``) accumulate."""
    overrides: dict = {}
    shown: dict = {}
    for text in texts:
        key, value = parse_set(text, config_class, overrides.get(text.partition("=")[0].partition(".")[0]))
        overrides[key] = value
        name, _, raw = text.partition("=")
        shown[name] = raw if "." in name else value
    return overrides, shown


def parse_set(text: str, config_class: type, current: object = None) -> tuple[str, object]:
    """``FIELD=VALUE`` -> ``(FIELD, value)``; a field ``config_class`` lacks is an error
    naming it. ``FIELD.SUB=VALUE`` sets ``SUB`` of a nested config dataclass field
    (``current``, or the field's default)."""
    from dataclasses import MISSING, fields, is_dataclass

    key, sep, raw = text.partition("=")
    key, dot, sub = key.partition(".")
    by_name = {f.name: f for f in fields(config_class)}
    if not sep or key not in by_name:
        raise SystemExit(
            f"{text!r}: expected FIELD=VALUE with FIELD one of {config_class.__name__}'s {sorted(by_name)}"
        )
    if dot:  # a field of a nested config dataclass, e.g. augment.channel_aug=0.5
        factory = by_name[key].default_factory
        if current is None and (factory is MISSING or not is_dataclass(factory())):
            raise SystemExit(f"{text!r}: {config_class.__name__}.{key} is not a nested config; use {key}=VALUE")
        nested = current if current is not None else factory()
        inner, value = parse_set(f"{sub}={raw}", type(nested))
        return key, replace(nested, **{inner: value})
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


if __name__ == "__main__":
    main()
