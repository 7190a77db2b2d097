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
        ims = [v, _luma(v)] + [Image.open(irs[k % len(irs)].path).convert("RGB").resize(size[::-1]) for k in (0, len(irs) // 2)]
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
