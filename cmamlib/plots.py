"""Figure helpers the notebooks share (matplotlib; they return the Figure)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from PIL import Image

from .data.records import INFRARED, VISIBLE, Record


def _luma(img: Image.Image) -> Image.Image:
    return img.convert("L").convert("RGB")


def sample_grid(records: Sequence[Record], num_ids: int = 6, seed: int = 0, size=(128, 64)):
    """Per identity: a visible image, its gray (BT.601) fake-IR view, and real infrared images.

    Rows are identities (that have both modalities), columns ``RGB | gray | IR | IR``.
    """
    import matplotlib.pyplot as plt

    by_id: dict[int, dict[str, list[Record]]] = defaultdict(lambda: {VISIBLE: [], INFRARED: []})
    for r in records:
        by_id[r.pid][r.modality].append(r)
    pids = [p for p in sorted(by_id) if by_id[p][VISIBLE] and by_id[p][INFRARED]]
    rng = np.random.default_rng(seed)
    pids = [pids[i] for i in sorted(rng.choice(len(pids), min(num_ids, len(pids)), replace=False))]
    cols = ["RGB", "gray (luma)", "IR", "IR"]
    fig, axes = plt.subplots(len(pids), len(cols), figsize=(1.3 * len(cols), 2.3 * len(pids)))
    axes = np.atleast_2d(axes)
    for i, pid in enumerate(pids):
        v = Image.open(by_id[pid][VISIBLE][0].path).convert("RGB").resize(size[::-1])
        irs = by_id[pid][INFRARED]
        ims = [v, _luma(v)] + [
            Image.open(irs[k % len(irs)].path).convert("RGB").resize(size[::-1]) for k in (0, len(irs) // 2)
        ]
        for j, im in enumerate(ims):
            ax = axes[i, j]
            ax.imshow(np.asarray(im))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        axes[i, 0].set_ylabel(f"id {pid}", fontsize=8)
    fig.tight_layout()
    return fig


def intensity_histograms(groups: dict[str, np.ndarray], bins: int = 64):
    """Overlaid normalised histograms of gray-level samples in [0, 255] (one per group)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, vals in groups.items():
        ax.hist(np.asarray(vals).ravel(), bins=bins, range=(0, 255), density=True, histtype="step", label=name)
    ax.set_xlabel("intensity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bar_table(rows: Sequence[dict], key: str = "mAP", label_key: str = "model", title: str = ""):
    """Bar chart of ``row[key]['mean']`` with ``std`` error bars, one bar per row."""
    import matplotlib.pyplot as plt

    labels = [str(r[label_key]) for r in rows]
    means = [100 * r[key]["mean"] for r in rows]
    stds = [100 * (r[key].get("std") or 0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(rows) + 2), 3.2))
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel(f"{key} (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def curves(history: Sequence[dict], keys: Sequence[str], title: str = "", xkey: str = "epoch"):
    """Line plot of ``history[i][k]`` for each ``k`` in ``keys`` (missing values skipped)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for k in keys:
        pts = [(h[xkey], h[k]) for h in history if k in h and h[k] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=k)
    ax.set_xlabel(xkey)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def views_grid(source: Sequence[Record], target_ir: Sequence[Record], num: int = 5, seed: int = 0, size=(128, 64)):
    """Stage-1 views of source images beside real target infrared images.

    Columns: ``RGB | gray (luma) | gray R | gray G | gray B | target IR``: the RGB view,
    the BT.601 gray view, the three possible random-channel gray views (the authors'
    default, one picked per image), and a real infrared image of the target domain
    (another person: the point is the look of the modality, not the identity).
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    src = [source[i] for i in sorted(rng.choice(len(source), min(num, len(source)), replace=False))]
    irs = [target_ir[i] for i in sorted(rng.choice(len(target_ir), min(num, len(target_ir)), replace=False))]
    cols = ["RGB", "gray (luma)", "gray R", "gray G", "gray B", "target IR"]
    fig, axes = plt.subplots(len(src), len(cols), figsize=(1.2 * len(cols), 2.2 * len(src)))
    axes = np.atleast_2d(axes)
    for i, r in enumerate(src):
        v = np.asarray(Image.open(r.path).convert("RGB").resize(size[::-1]))
        chans = [np.repeat(v[..., c : c + 1], 3, axis=2) for c in range(3)]
        ir = np.asarray(Image.open(irs[i % len(irs)].path).convert("RGB").resize(size[::-1]))
        for j, im in enumerate([v, np.asarray(_luma(Image.fromarray(v)))] + chans + [ir]):
            ax = axes[i, j]
            ax.imshow(im)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
    fig.tight_layout()
    return fig


def results_bars(rows: Sequence[dict], keys: Sequence[str], label_key: str = "variant", title: str = ""):
    """Grouped bars: one group per row, one bar per ``row[key]`` (fractions, shown in %)."""
    import matplotlib.pyplot as plt

    n, k = len(rows), len(keys)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * n + 2), 3.3))
    w = 0.8 / max(k, 1)
    for j, key in enumerate(keys):
        vals = [100 * float(r.get(key) or 0.0) for r in rows]
        errs = [100 * float(r.get(key + "_std") or 0.0) for r in rows]
        ax.bar(np.arange(n) + (j - (k - 1) / 2) * w, vals, w, yerr=errs, capsize=2, label=key)
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(r[label_key]) for r in rows], rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


MODALITY_COLOURS = {"visible": "#e08214", "infrared": "#5e3c99"}


def identity_colours(pids: np.ndarray, num_ids: int = 12, seed: int = 0, modality: np.ndarray | None = None) -> dict:
    """A fixed colour (tab20) for ``num_ids`` identities drawn with ``seed`` from the sorted
    ids (from those with rows in both modalities when ``modality``, (N,) bool True =
    infrared, is given), so that every panel of a figure colours a person the same way.

    Returns:
        ``{pid: RGBA tuple}`` for the highlighted identities (others are drawn light gray).
    """
    import matplotlib

    pids = np.asarray(pids)
    ids = np.unique(pids)
    if modality is not None:
        m = np.asarray(modality, dtype=bool)
        ids = np.intersect1d(np.unique(pids[m]), np.unique(pids[~m]))
    pick = np.sort(np.random.default_rng(seed).choice(ids, min(num_ids, len(ids)), replace=False)) if len(ids) else ids
    cmap = matplotlib.colormaps["tab20"]
    return {p.item(): cmap(i % 20) for i, p in enumerate(pick)}


def embedding_panels(
    embeddings: dict[str, np.ndarray],
    modality: np.ndarray,
    pids: np.ndarray,
    num_ids: int = 12,
    seed: int = 0,
    title: str = "",
    point_size: float = 6.0,
):
    """2-D embeddings of several feature sets side by side: one column per entry of
    ``embeddings`` (``name -> (N, 2)``, rows in the same order), top row coloured by
    modality, bottom row by identity (``num_ids`` highlighted identities in fixed
    colours, :func:`identity_colours`; the others light gray). Visible rows are circles,
    infrared rows triangles, in both rows.

    Args:
        embeddings: ``name -> (N, 2)`` coordinates (e.g. :func:`cmamlib.analysis.embed_2d`).
        modality: (N,) bool, True = infrared.
        pids: (N,) identities.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    is_ir = np.asarray(modality, dtype=bool)
    pids = np.asarray(pids)
    colours = identity_colours(pids, num_ids, seed, is_ir)
    hl = np.isin(pids, list(colours))
    names = list(embeddings)
    fig, axes = plt.subplots(2, len(names), figsize=(3.0 * len(names), 6.2), squeeze=False)
    markers = ((False, "o"), (True, "^"))
    for j, name in enumerate(names):
        e = np.asarray(embeddings[name])
        if e.shape != (len(is_ir), 2):
            raise ValueError(f"embedding {name!r} has shape {e.shape}, expected ({len(is_ir)}, 2)")
        ax = axes[0, j]
        for ir, mk in markers:
            sel = is_ir == ir
            ax.scatter(
                e[sel, 0],
                e[sel, 1],
                s=point_size,
                marker=mk,
                alpha=0.6,
                linewidths=0,
                c=MODALITY_COLOURS["infrared" if ir else "visible"],
            )
        ax.set_title(name, fontsize=9)
        ax = axes[1, j]
        ax.scatter(e[~hl, 0], e[~hl, 1], s=point_size * 0.7, c="#d9d9d9", linewidths=0)
        for ir, mk in markers:
            sel = hl & (is_ir == ir)
            ax.scatter(
                e[sel, 0],
                e[sel, 1],
                s=point_size * 2.2,
                marker=mk,
                linewidths=0.3,
                edgecolors="k",
                c=[colours[p.item()] for p in pids[sel]],
            )
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("by modality", fontsize=9)
    axes[1, 0].set_ylabel(f"by identity ({len(colours)} ids)", fontsize=9)
    mod_handles = [
        Line2D(
            [],
            [],
            ls="",
            marker=mk,
            color=MODALITY_COLOURS["infrared" if ir else "visible"],
            label="infrared" if ir else "visible",
        )
        for ir, mk in markers
    ]
    id_handles = [Line2D([], [], ls="", marker="s", color=c, label=f"id {p}") for p, c in colours.items()]
    id_handles.append(Line2D([], [], ls="", marker="s", color="#d9d9d9", label="other ids"))
    fig.legend(
        handles=mod_handles + [Line2D([], [], ls="", marker="o", color="k", mfc="none", label="o visible, ^ infrared")],
        loc="upper right",
        fontsize=7,
        ncol=3,
        frameon=False,
    )
    fig.legend(handles=id_handles, loc="lower center", fontsize=7, ncol=min(len(id_handles), 13), frameon=False)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


def gap_bars(
    rows: Sequence[dict],
    keys: Sequence[str],
    label_key: str = "stage",
    title: str = "",
    reference: dict[str, float] | None = None,
    ncols: int = 3,
):
    """Small multiples of modality-gap metrics per stage: one panel per metric in
    ``keys``, one bar per row (``row[label_key]``, same colour per row in every panel);
    ``reference`` draws a dashed line at a metric's reference value (e.g. chance)."""
    import matplotlib
    import matplotlib.pyplot as plt

    n, k = len(rows), len(keys)
    nrows = int(np.ceil(k / ncols))
    ncols = min(ncols, k)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(2.9, 0.55 * n + 1.2) * ncols, 2.9 * nrows), squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(i % 10) for i in range(n)]
    for a, key in enumerate(keys):
        ax = axes.flat[a]
        vals = [float(r[key]) if r.get(key) is not None else np.nan for r in rows]
        ax.bar(range(n), vals, color=colours)
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.annotate(
                    f"{v:.2f}",
                    (i, v),
                    ha="center",
                    va="bottom" if v >= 0 else "top",
                    fontsize=6,
                    xytext=(0, 1 if v >= 0 else -1),
                    textcoords="offset points",
                )
        ax.axhline(0, color="k", lw=0.6)
        if reference and key in reference:
            ax.axhline(reference[key], color="gray", ls="--", lw=0.8)
        ax.set_title(key, fontsize=8)
        ax.set_xticks(range(n))
        ax.set_xticklabels([str(r[label_key]) for r in rows], rotation=35, ha="right", fontsize=6.5)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
