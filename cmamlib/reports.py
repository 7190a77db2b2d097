"""One helper for everything notebooks write to ``reports/`` and for the results pages.

Every notebook writes ``reports/NN_name/metrics.json`` and its PNG figures through
:func:`write_metrics` / :func:`save_figure`; :func:`update_readme` regenerates the
results sections from those JSON files, so every figure in the README and in
``docs/results.md`` comes from a file a notebook wrote. Blocks (:data:`BLOCKS`), each
between its two markers in whichever file holds them: ``headline`` (the README's short
results table), ``main`` (``docs/results.md``, every table of ``make reproduce``) and
``long`` (``docs/results.md``, notebook 03 with the ``cpu-long`` preset, ``make
reproduce-long``). A make target regenerates its own blocks only (:data:`TARGET_BLOCKS`).

CLI: ``python -m cmamlib.reports readme-table [--block main|long|all] [--reports reports]
[--readme README.md] [--results docs/results.md]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: README blocks: name -> (start marker, end marker, timings file under reports/, make target).
BLOCKS: dict[str, tuple[str, str, str, str]] = {
    "headline": ("<!-- headline:start -->", "<!-- headline:end -->", "", "make reproduce"),
    "main": (START, END, "timings.txt", "make reproduce"),
    "long": ("<!-- results-long:start -->", "<!-- results-long:end -->", "timings-long.txt", "make reproduce-long"),
}
#: What ``readme-table --block NAME`` regenerates: ``make reproduce`` the headline and the
#: main tables, ``make reproduce-long`` the cpu-long tables.
TARGET_BLOCKS: dict[str, tuple[str, ...]] = {
    "main": ("headline", "main"),
    "long": ("long",),
    "all": ("headline", "main", "long"),
    "headline": ("headline",),
}


def report_dir(name: str, root: str | os.PathLike = "reports") -> Path:
    """``<root>/<name>/``, created if missing (``name`` like ``"00_synthetic_benchmark"``)."""
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "to_dict") and callable(v.to_dict):
        return _clean(v.to_dict())
    if hasattr(v, "tolist") and callable(v.tolist):
        return _clean(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_metrics(name: str, metrics: dict, root: str | os.PathLike = "reports") -> Path:
    """Write ``metrics`` (+ a ``_meta`` block: time, host, torch version) to
    ``<root>/<name>/metrics.json`` atomically and return the path."""
    import torch

    d = report_dir(name, root)
    payload = dict(_clean(metrics))
    payload["_meta"] = {
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    path = d / "metrics.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_metrics(name: str, root: str | os.PathLike = "reports") -> dict | None:
    p = Path(root) / name / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else None


def save_figure(fig, name: str, filename: str, root: str | os.PathLike = "reports", dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``<root>/<name>/<filename>`` (PNG)."""
    d = report_dir(name, root)
    path = d / filename
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- README table
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ms(entry: dict | None, key: str) -> str:
    """``mean ± std`` in percent of ``entry[key]`` = {"mean", "std"} or a float."""
    if entry is None or key not in entry or entry[key] is None:
        return "-"
    v = entry[key]
    if isinstance(v, dict):
        if v.get("std") is None:
            return _pct(v.get("mean"))
        return f"{_pct(v['mean'])} ± {_pct(v['std'])}"
    return _pct(v)


#: ``(reports/<name>, README block of :data:`BLOCKS`, renderer)`` in README order.
SECTION_RENDERERS: list[tuple[str, str, Callable[[dict], list[str]]]] = []


def section(name: str, block: str = "main"):
    """Register a README renderer for ``reports/<name>/metrics.json`` in README block ``block``."""

    def deco(fn):
        SECTION_RENDERERS.append((name, block, fn))
        return fn

    return deco


@section("00_synthetic_benchmark")
def _render_calibration(m: dict) -> list[str]:
    out = [
        "**Synthetic benchmark calibration** (`reports/00_synthetic_benchmark/metrics.json`; supervised models, "
        f"identity labels used for calibration only; mean ± std over seeds {m.get('seeds')}, "
        f"{m.get('backbone', '')}):",
        "",
        "| model | protocol | R1 | mAP | check |",
        "|---|---|---|---|---|",
    ]
    for row in m.get("table", []):
        out.append(
            f"| {row['model']} | {row['protocol']} | {_ms(row, 'R1')} | {_ms(row, 'mAP')} | {row.get('check', '')} |"
        )
    checks = m.get("checks", {})
    if checks:
        ok = ", ".join(f"({k}) {'pass' if v['pass'] else 'FAIL'}" for k, v in checks.items())
        out += ["", f"Calibration properties: {ok}."]
    return out


def _flat_ms(row: dict, key: str) -> str:
    """``mean ± std`` in percent from flat ``row[key]`` / ``row[key + "_std"]``."""
    if row.get(key) is None:
        return "-"
    std = row.get(key + "_std")
    several = len(row.get("seeds", ())) > 1  # a spread of 0.0 over several seeds is shown, one seed has none
    return _pct(row[key]) if std is None or (not std and not several) else f"{_pct(row[key])} ± {_pct(std)}"


def _stage_table(m: dict, label_key: str, cols: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(["variant"] + [c for c, _ in cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for row in m.get("rows", []):
        out.append(
            "| "
            + " | ".join([str(row.get(label_key, row.get("variant")))] + [_flat_ms(row, k) for _, k in cols])
            + " |"
        )
    return out


def _seeds_note(m: dict) -> str:
    return f"seeds {m.get('seeds')}, {m.get('trials')} SYSU trials" + (" (SMOKE run)" if m.get("smoke") else "")


@section("01_gray_augmentation")
def _render_gray(m: dict) -> list[str]:
    out = [
        f"**Gray view, direct transfer** (`reports/01_gray_augmentation/metrics.json`; unsupervised source "
        f"training, no target training, {_seeds_note(m)}; %):",
        "",
    ]
    out += _stage_table(
        m,
        "variant",
        [
            ("all R1", "all_R1"),
            ("all mAP", "all_mAP"),
            ("indoor R1", "indoor_R1"),
            ("indoor mAP", "indoor_mAP"),
            ("source mAP", "source_mAP"),
        ],
    )
    return out


@section("02_cmam_pretraining")
def _render_cmam(m: dict) -> list[str]:
    out = [
        "**Stage 1 ablation** (`reports/02_cmam_pretraining/metrics.json`; "
        "direct transfer of F_rg to SYSU-MM01-synth, "
        f"{_seeds_note(m)}; %):",
        "",
    ]
    out += _stage_table(
        m,
        "label",
        [
            ("all R1", "all_R1"),
            ("all mAP", "all_mAP"),
            ("indoor R1", "indoor_R1"),
            ("indoor mAP", "indoor_mAP"),
            ("source V->V mAP", "source_mAP"),
        ],
    )
    return out


@section("03_self_training")
def _render_selftrain(m: dict, name: str = "03_self_training", title: str = "Stage 2, final results") -> list[str]:
    out = [
        f"**{title}** (`reports/{name}/metrics.json`; SYSU-MM01-synth IR -> V, "
        f"{_seeds_note(m)}; mean ± std over seeds, %):",
        "",
    ]
    out += _stage_table(
        m,
        "label",
        [
            ("all R1", "all_R1"),
            ("all R10", "all_R10"),
            ("all R20", "all_R20"),
            ("all mAP", "all_mAP"),
            ("all mINP", "all_mINP"),
            ("indoor R1", "indoor_R1"),
            ("indoor mAP", "indoor_mAP"),
        ],
    )
    sup = m.get("supervised_config")
    if sup:
        h, w = sup.get("image_size", ["?", "?"])
        out += [
            "",
            f"The upper bound is the calibration's model (d) (identity labels, cross-modality batches) "
            f"trained at the stage-2 input size, {h}x{w}, on the same images as the other rows.",
        ]
    goal = _goal_line(m)
    return out + (["", goal] if goal else [])


def _goal_line(m: dict) -> str | None:
    """The "Goal check" sentence of a stage-2 ``metrics.json`` (None without a goal)."""
    goal = m.get("goal", {})
    if not goal:
        return None
    frac = goal.get("fraction_of_upper_bound_all_mAP")
    line = (
        "Goal check: full method at "
        + ("-" if frac is None else f"{100 * frac:.0f}%")
        + " of the supervised upper bound's all-search mAP (goal 60%); above every ablation: "
        + ("yes" if goal.get("above_every_ablation_all_mAP") else "no")
        + "."
    )
    for inv in goal.get("investigations", {}).values():
        f2 = inv.get("fraction_of_upper_bound_all_mAP")
        line += (
            f" {inv['label'][0].upper()}{inv['label'][1:]}: "
            + ("-" if f2 is None else f"{100 * f2:.0f}%")
            + " of the upper bound; above every ablation: "
            + ("yes" if inv.get("above_every_ablation_all_mAP") else "no")
            + "."
        )
    return line


@section("03_self_training_cpu-long", block="long")
def _render_selftrain_long(m: dict) -> list[str]:
    out = _render_selftrain(m, "03_self_training_cpu-long", f"Stage 2 with the `{m.get('preset', 'cpu-long')}` preset")
    sec = m.get("seconds") or {}
    if sec:
        out += [
            "",
            "Training and evaluation time per row, all seeds (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in sec.items())
            + ".",
        ]
    return out


@section("03_self_training")
def _render_regdb(m: dict) -> list[str]:
    reg = m.get("regdb")
    if not reg:
        return []
    splits = reg.get("splits", [])
    out = [
        f"**Stage 2 on RegDB-synth** (`reports/03_self_training/metrics.json`, key `regdb`; one run per variant, "
        f"seed and split, mean over {len(splits)} splits, then mean ± std over seeds {m.get('seeds')}; %):",
        "",
    ]
    out += _stage_table(
        reg,
        "label",
        [
            ("V->T R1", "v2t_R1"),
            ("V->T mAP", "v2t_mAP"),
            ("V->T mINP", "v2t_mINP"),
            ("T->V R1", "t2v_R1"),
            ("T->V mAP", "t2v_mAP"),
            ("T->V mINP", "t2v_mINP"),
        ],
    )
    return out


@section("04_modality_gap")
def _render_gap(m: dict) -> list[str]:
    ts = m.get("test_set", {})
    out = [
        f"**Modality gap per stage** (`reports/04_modality_gap/metrics.json`; SYSU-MM01-synth test set, "
        f"{ts.get('infrared')} infrared + {ts.get('visible')} "
        f"visible images of {ts.get('ids')} ids, seed {m.get('seed')}"
        + (", SMOKE run" if m.get("smoke") else "")
        + "):",
        "",
        "| stage | centroid gap / spread | NN id acc. IR->V | NN id acc. V->IR | modality probe (bal. acc.) "
        "| silhouette by modality | silhouette by id | DBSCAN ARI | HDBSCAN ARI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    clus = m.get("clustering", {})
    for r in m.get("rows", []):
        c = clus.get(r["stage"], {})
        ari = [f"{c[k]['ari']:.3f}" if k in c else "-" for k in ("dbscan", "hdbscan")]
        out.append(
            f"| {r.get('label', r['stage'])} | {r['centroid_gap_ratio']:.2f} | {_pct(r['nn_acc_ir_to_vis'])} | "
            f"{_pct(r['nn_acc_vis_to_ir'])} | {_pct(r['probe_balanced_accuracy'])} | "
            f"{r['silhouette_modality']:.3f} | {r['silhouette_identity']:.3f} | {ari[0]} | {ari[1]} |"
        )
    return out


@section("05_pseudo_label_inspector")
def _render_inspector(m: dict) -> list[str]:
    c = m.get("clusters", {})
    v, i = c.get("visible", {}), c.get("infrared", {})
    out = [
        "**Pseudo labels seen by the inspector** (`reports/05_pseudo_label_inspector/metrics.json`; "
        f"stage-2 `{m.get('variant')}` "
        f"run, seed {m.get('seed')}, the clustering its next epoch would use"
        + (", SMOKE run" if m.get("smoke") else "")
        + "): "
        f"{v.get('clusters')} visible clusters ({_pct(v.get('noise_fraction'))}% "
        f"noise, purity {_pct(v.get('purity'))}%), "
        f"{i.get('clusters')} infrared clusters ({_pct(i.get('noise_fraction'))}% "
        f"noise, purity {_pct(i.get('purity'))}%), "
        f"{m.get('pairs')} cross-modality pairs of which {m.get('pairs_correct')} correct "
        f"({_pct(m.get('pairs_correct_fraction'))}%)."
    ]
    ub, ua = m.get("unified_before", {}), m.get("unified_after_overrides", {})
    if ub and ua:
        out[0] += (
            f" Scripted corrections (true identities standing in for a person's clicks, {len(m.get('actions', []))} "
            f"actions) move the shared labels' ARI from {ub.get('ari', 0):.3f} to {ua.get('ari', 0):.3f}."
        )
    return out


@section("02_cmam_pretraining", block="headline")
def _headline_cmam(m: dict) -> list[str]:
    out = [
        "**Stage 1 ablation**, direct transfer of F_rg to SYSU-MM01-synth "
        "(`reports/02_cmam_pretraining/metrics.json`, "
        f"{_seeds_note(m)}; all-search mAP, %):",
        "",
    ]
    return out + _stage_table(m, "label", [("all mAP", "all_mAP"), ("source V->V mAP", "source_mAP")])


@section("03_self_training", block="headline")
def _headline_selftrain(m: dict) -> list[str]:
    out = [
        f"**Stage 2** on SYSU-MM01-synth, IR -> V (`reports/03_self_training/metrics.json`, {_seeds_note(m)}; %):",
        "",
    ]
    out += _stage_table(m, "label", [("all R1", "all_R1"), ("all mAP", "all_mAP"), ("indoor mAP", "indoor_mAP")])
    goal = _goal_line(m)
    return out + (["", goal] if goal else [])


def render_results(root: str | os.PathLike = "reports", block: str = "main") -> str:
    """README block ``block`` (:data:`BLOCKS`), from every registered ``metrics.json`` of it that exists."""
    if block not in BLOCKS:
        raise ValueError(f"block {block!r}: expected one of {sorted(BLOCKS)}")
    _, _, timings_name, target = BLOCKS[block]
    parts: list[str] = []
    written = set()
    for name, section_block, fn in SECTION_RENDERERS:
        if section_block != block:
            continue
        m = read_metrics(name, root)
        if m is None:
            if name not in written:
                parts.append(f"*`reports/{name}/metrics.json` not written yet: run `{target}`.*")
                written.add(name)
            continue
        parts += fn(m)
        parts.append("")
    timings = Path(root) / timings_name if timings_name else None
    if timings is not None and timings.exists():
        lines = last_reproduce_timings(timings.read_text())
        if lines:
            parts += [f"Wall time of the last `{target}` on this machine (`reports/{timings_name}`):", ""]
            parts += ["```"] + lines + ["```"]
    full = Path(root) / FULL_TIMINGS
    if block == "main" and full.exists():
        lines = last_reproduce_timings(full.read_text(), total=FULL_TOTAL)
        if lines:
            parts += ["", f"Then the investigation rows, `make reproduce-full` (`reports/{FULL_TIMINGS}`):", ""]
            parts += ["```"] + lines + ["```"]
    return "\n".join(parts).strip() + "\n"


#: ``make reproduce-full``'s timings file (its extra notebook runs) and the prefix of its closing line.
FULL_TIMINGS, FULL_TOTAL = "timings-full.txt", "reproduce-full extra"


def last_reproduce_timings(text: str, total: str = "reproduce total") -> list[str]:
    """The lines of the last ``make reproduce`` in ``reports/timings.txt``: one
    ``<notebook>: <s> s`` line per notebook, closed by ``reproduce total: <s> s`` (the
    prefix ``total``). A file that holds several runs (appended) gives the last one; a
    run cut off before its total gives the lines it wrote after the last complete run."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ends = [i for i, ln in enumerate(lines) if ln.startswith(total)]
    if ends and ends[-1] == len(lines) - 1:
        ends = ends[:-1]
    return lines[ends[-1] + 1 :] if ends else lines


def update_readme(
    readme: str | os.PathLike = "README.md",
    root: str | os.PathLike = "reports",
    block: str = "main",
    results: str | os.PathLike | None = None,
) -> bool:
    """Regenerate the blocks of ``block`` (:data:`TARGET_BLOCKS`: ``main``, ``long``,
    ``all`` or one block name) between their markers, in ``readme`` and ``results``
    (``docs/results.md`` beside the README when it exists), each block in the file that
    holds its markers; returns True if a file changed.

    Raises:
        ValueError: an unknown block, or a block whose markers neither file holds.
    """
    if block not in TARGET_BLOCKS:
        raise ValueError(f"block {block!r}: expected one of {sorted(TARGET_BLOCKS)}")
    paths = [Path(readme)]
    res = Path(results) if results is not None else Path(readme).parent / "docs" / "results.md"
    if res.exists() or results is not None:
        paths.append(res)
    texts = {p: p.read_text() for p in paths}
    new = dict(texts)
    for b in TARGET_BLOCKS[block]:
        start, end = BLOCKS[b][:2]
        holder = next((p for p in paths if start in new[p] and end in new[p]), None)
        if holder is None:
            if b == "headline" and block != "headline":
                continue  # a README without a headline block is left alone
            raise ValueError(f"{' / '.join(map(str, paths))}: markers {start} / {end} not found")
        head, rest = new[holder].split(start, 1)
        _, tail = rest.split(end, 1)
        new[holder] = head + start + "\n" + render_results(root, b) + end + tail
    changed = False
    for p in paths:
        if new[p] != texts[p]:
            p.write_text(new[p])
            changed = True
    return changed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="cmamlib report helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rt = sub.add_parser("readme-table", help="regenerate the README results section from reports/")
    rt.add_argument("--reports", default="reports")
    rt.add_argument("--readme", default="README.md")
    rt.add_argument(
        "--results", default=None, help="the full results page (default: docs/results.md beside the README)"
    )
    rt.add_argument(
        "--block",
        default="main",
        choices=sorted(TARGET_BLOCKS),
        help="main (make reproduce: headline + main), long (make reproduce-long), all, or headline",
    )
    args = ap.parse_args(argv)
    if args.cmd == "readme-table":
        changed = update_readme(args.readme, args.reports, args.block, args.results)
        print(f"results blocks {', '.join(TARGET_BLOCKS[args.block])}: {'updated' if changed else 'unchanged'}")


if __name__ == "__main__":
    main()
