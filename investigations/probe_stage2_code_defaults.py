"""Stage 2, one code default at a time: which of the authors' stage-2 choices move the
full method and the stage-1 RGB-only init on SYSU-MM01-synth?

Starts from the earlier stage-2 defaults (``selftrain.EARLIER_DEFAULTS``: everything carried
over, detached batch-mean KL, mean distance term, Ward on L2-normalised centroids) and adds one
of the code's values (``CODE_DEFAULTS``) at a time, then all of them (the defaults). Stage 1 is
the code-default one of notebook 02 (``runs/stage1``, trained when missing); every row reports
model A's pre-BNNeck feature (the code's test feature), so the rows differ only in training.
Each row is one ``probe_stage2_length.py --defaults code --set ...`` call, which writes
``reports/probes/<prefix><row>.json``; ``--table`` prints the markdown table of every file
with the given prefixes (mean and population std over the seeds found).

    python investigations/probe_stage2_code_defaults.py --seeds 0 1 --variants full --prefix stage2_oat_
    python investigations/probe_stage2_code_defaults.py --table stage2_oat_ stage2_oat_rgb_only_ stage2_oat_seeds23_
    python investigations/probe_stage2_code_defaults.py --diagnostics --seeds 0 1 2 3

``--diagnostics`` reads the defaults rows' run logs (``runs/probe_stage2_length/<variant>_e<E>_code_seed<S>/
log.jsonl``) and writes the first and last epoch's pseudo-label diagnostics, mean over the seeds,
to ``reports/probes/stage2_oat_diagnostics.json``.

Cost: about 45 s per 6-epoch stage-2 run on 2 cores, plus stage 1 for seeds not yet trained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from probe_stage2_length import run_name

from cmamlib.training.selftrain import CODE_DEFAULTS, EARLIER_DEFAULTS

#: The training fields of :data:`CODE_DEFAULTS` (``test_feature`` is held at the code's value).
FIELDS = tuple(f for f in CODE_DEFAULTS if f != "test_feature")
ROWS = {
    "earlier": "earlier stage-2 defaults",
    **{f"plus_{f}": f"+ {f}={CODE_DEFAULTS[f]}" for f in FIELDS},
    "code": "all of them (the defaults)",
}
PROBES = Path("reports/probes")


def row_sets(row: str) -> list[str]:
    """``--set`` arguments of one row: every field at its earlier value except the row's one
    (``plus_<field>``); none for ``code``, all for ``earlier``."""
    if row == "code":
        return []
    keep = row.removeprefix("plus_")
    sets = []
    for f in FIELDS:
        if f != keep:
            sets += ["--set", f"{f}={json.dumps(EARLIER_DEFAULTS[f])}"]
    return sets


def table(prefixes: list[str]) -> str:
    """Markdown table, one line per row of :data:`ROWS`: each variant's all-search mAP per seed
    and its mean ± population std over the files ``<prefix><row>.json``."""
    data: dict[str, dict[str, dict[int, float]]] = {}
    for row in ROWS:
        for p in prefixes:
            f = PROBES / f"{p}{row}.json"
            if f.exists():
                for r in json.loads(f.read_text())["rows"]:
                    if "all_mAP" in r:
                        data.setdefault(row, {}).setdefault(r["variant"], {})[r["seed"]] = 100 * r["all_mAP"]
    if not data:
        raise SystemExit(f"no {PROBES}/<prefix><row>.json for the prefixes {prefixes} (rows: {', '.join(ROWS)})")
    variants = sorted({v for by in data.values() for v in by})
    lines = ["| stage 2 | " + " | ".join(f"{v}, per seed | {v}, mean" for v in variants) + " |"]
    lines.append("|" + "---|" * (1 + 2 * len(variants)))
    for row, label in ROWS.items():
        cells = []
        for v in variants:
            m = [x for _, x in sorted(data.get(row, {}).get(v, {}).items())]
            cells += [
                " / ".join(f"{x:.1f}" for x in m) or "-",
                f"{statistics.mean(m):.1f} ± {statistics.pstdev(m):.1f}" if m else "-",
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DIAGNOSTICS = (
    "vis_clusters",
    "vis_noise_fraction",
    "vis_purity",
    "ir_clusters",
    "ir_noise_fraction",
    "ir_purity",
    "pairs_correct_fraction",
    "unified_purity",
)


def diagnostics(runs: Path, variants: list[str], seeds: list[int], epochs: int) -> dict:
    """``{variant: {"first_epoch" | "last_epoch": {key: mean over seeds}}}`` of the defaults
    rows' stage-2 logs (keys :data:`DIAGNOSTICS`), with the seeds and log paths read."""
    out: dict = {"seeds": seeds, "logs": []}
    for v in variants:
        per: dict[str, dict[str, list[float]]] = {"first_epoch": {}, "last_epoch": {}}
        for seed in seeds:
            log = runs / run_name(v, epochs, "_code", seed) / "log.jsonl"
            if not log.exists():
                raise SystemExit(f"{log} is missing: run the defaults row first (--rows code --seeds {seed})")
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            out["logs"].append(str(log))
            for name, row in (("first_epoch", rows[0]), ("last_epoch", rows[-1])):
                for k in DIAGNOSTICS:
                    per[name].setdefault(k, []).append(float(row[k]))
        out[v] = {name: {k: round(statistics.mean(x), 4) for k, x in d.items()} for name, d in per.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=["full", "stage1_rgb_only"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--prefix", default="stage2_oat_", help="output files reports/probes/<prefix><row>.json")
    ap.add_argument("--table", nargs="+", metavar="PREFIX", help="only print the table of these files")
    ap.add_argument("--diagnostics", action="store_true", help="only summarise the defaults rows' logs")
    ap.add_argument("--runs", default="runs")
    args = ap.parse_args()
    if args.diagnostics:
        d = diagnostics(Path(args.runs), args.variants, args.seeds, args.epochs)
        out = PROBES / "stage2_oat_diagnostics.json"
        out.write_text(json.dumps(d, indent=1))
        print(json.dumps({v: d[v] for v in args.variants}, indent=1))
        print("wrote", out)
        return
    if args.table:
        print(table(args.table))
        return
    probe = Path(__file__).with_name("probe_stage2_length.py")
    for row in args.rows:
        cmd = [sys.executable, str(probe), "--defaults", "code", "--variants", *args.variants]
        cmd += ["--seeds", *map(str, args.seeds), "--epochs", str(args.epochs)]
        cmd += ["--out", str(PROBES / f"{args.prefix}{row}.json"), *row_sets(row)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(table([args.prefix]))


if __name__ == "__main__":
    main()
