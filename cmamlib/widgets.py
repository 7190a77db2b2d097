"""Interactive inspection of stage-2 pseudo labels (ipywidgets).

:class:`PseudoLabelInspector` shows one epoch's per-modality clusters and their
bipartite visible <-> infrared matching (:func:`cmamlib.training.selftrain.cluster_and_match`)
as thumbnail grids, and records corrections (noise clusters, rejected matches,
reassigned matches) as the ``label_overrides`` dict that
:func:`cmamlib.training.selftrain.run_selftrain` reads
(:func:`cmamlib.training.selftrain.apply_overrides`).

Every widget is created once in the constructor and updated in place (``.value``,
``.children``, ``.options``, ``.layout``), so a notebook front end never rebuilds the
view; the thumbnail grids page (``page_size`` images a page) so a cluster of thousands
of images sends only one page of small JPEGs. Headless (papermill, tests): drive the
widgets by setting ``.value`` and calling ``.click()`` on the buttons, then
:meth:`PseudoLabelInspector.export` and :meth:`PseudoLabelInspector.snapshot`.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image as PILImage

from .clustering import cluster_majority
from .data.records import INFRARED, Record

__all__ = ["PseudoLabelInspector", "Entry"]

SORT_KEYS = {
    "size (largest first)": "size",
    "purity (lowest first)": "purity",
    "match similarity (lowest first)": "similarity",
}
SIDES = ("visible", "infrared")


@dataclass(frozen=True)
class Entry:
    """One browsable item: a matched pair of the clustering ``(vis, ir)``, or a cluster
    in no pair (the other id None)."""

    vis: int | None
    ir: int | None

    @property
    def anchor(self) -> tuple[str, int]:
        """The cluster a reassignment keeps: the visible one when present."""
        return ("visible", self.vis) if self.vis is not None else ("infrared", self.ir)  # type: ignore[return-value]


class PseudoLabelInspector:
    """Browse and correct one epoch's per-modality clusters and their matching.

    Args:
        records: the ``N`` target images (:class:`cmamlib.data.Record`; ``modality``
            selects the side, ``path`` the thumbnail unless ``images`` is given, ``pid``
            is never read: pass ``true_pids`` for purity).
        features: ``(N, D)`` float: the features that were clustered (e.g.
            :attr:`EpochLabels.features <cmamlib.training.selftrain.EpochLabels>`);
            cluster centroids, their cosine similarities and the nearest alternative
            clusters come from them.
        labels: ``(N,)`` int **per-modality** cluster id of every record, in record
            order: a visible record holds a visible cluster id, an infrared record an
            infrared cluster id (the two id spaces are independent), ``-1`` noise; i.e.
            ``EpochLabels.modality_labels()``. These are the ids of the exported
            overrides.
        pairs: ``(M, 2)`` int ``(visible_id, infrared_id)`` matched pairs
            (``EpochLabels.raw_pairs``); every id must occur in ``labels`` on its side.
        true_pids: optional ``(N,)`` int true identities (diagnostics only): purity of
            every cluster (fraction of its images with the cluster's majority identity),
            pair correctness (same majority identity on both sides), red borders on the
            thumbnails that are not of the majority identity.
        images: optional ``(N, 3, H, W)`` uint8 decoded images (thumbnails from them
            instead of the files).
        epoch: the stage-2 epoch of this clustering: exported as ``"epochs": [epoch]``
            so :func:`run_selftrain` applies the corrections to that epoch only; None:
            no ``"epochs"`` key (every epoch, only sensible for a one-epoch run).
        sort_by: initial order: ``"size"`` (images of the pair, largest first),
            ``"purity"`` (lower purity of the two clusters first; needs ``true_pids``)
            or ``"similarity"`` (centroid cosine of the match, lowest first; unmatched
            clusters last).
        page_size: thumbnails a page per side (24).
        columns: thumbnails a grid row.
        thumb_size: ``(H, W)`` of a thumbnail in pixels.
        n_alternatives: nearest alternative clusters listed (centroid cosine).

    Entries: every matched pair of ``pairs``, then every visible and every infrared
    cluster in no pair. Corrections (buttons, or :meth:`flag_noise`, :meth:`reject`,
    :meth:`reassign`) are exported by :meth:`export` as::

        {"noise_clusters": {"visible": [...], "infrared": [...]},
         "reject_pairs": [[vis_id, ir_id], ...],
         "force_pairs": [[vis_id, ir_id], ...],
         "epochs": [epoch]}

    which :func:`cmamlib.training.selftrain.check_overrides` and ``apply_overrides``
    accept: a reassignment is a forced pair (it replaces every pair of its two
    clusters, so the last reassignment of a cluster wins); a rejected or forced pair
    naming a cluster flagged as noise is left out (noise already removes its pairs).

    Attributes (widgets, created once): ``widget`` (the whole view), ``sort``,
    ``position``, ``prev_button`` / ``next_button`` (entries), ``summary``, ``info``,
    ``alternatives``, ``vis_header`` / ``ir_header``, ``vis_grid`` / ``ir_grid``
    (``GridBox`` of ``Image``), ``vis_thumbs`` / ``ir_thumbs`` (the pools of ``Image``
    widgets the grids show), ``vis_prev_page`` / ``vis_next_page`` / ``vis_page``
    (and ``ir_``), ``noise_vis_button``, ``noise_ir_button``, ``reject_button``,
    ``reassign_choice`` (``Dropdown`` of the other modality's clusters, nearest first),
    ``reassign_button``, ``reset_button``, ``export_view`` (the overrides JSON).

    Attributes (data): ``entries`` (:class:`Entry` list), ``members[side][id]`` (record
    indices of a cluster), ``majority[side][id]`` / ``purity[side][id]`` (with
    ``true_pids``), ``noise[side]`` / ``rejected`` / ``forced`` (the corrections).
    """

    def __init__(
        self,
        records: Sequence[Record],
        features: torch.Tensor | np.ndarray,
        labels: np.ndarray | Sequence[int],
        pairs: np.ndarray | Sequence[Sequence[int]],
        true_pids: np.ndarray | Sequence[int] | None = None,
        *,
        images: torch.Tensor | np.ndarray | None = None,
        epoch: int | None = None,
        sort_by: str = "size",
        page_size: int = 24,
        columns: int = 8,
        thumb_size: tuple[int, int] = (96, 48),
        n_alternatives: int = 5,
    ) -> None:
        import ipywidgets as W

        self.records = list(records)
        n = len(self.records)
        x = (
            features.detach().cpu().float().numpy()
            if isinstance(features, torch.Tensor)
            else np.asarray(features, dtype=np.float32)
        )
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"features has shape {x.shape}; expected (N, D) with N = {n} records")
        lab = np.asarray(labels)
        if lab.shape != (n,) or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
            raise ValueError(
                f"labels has shape {lab.shape} dtype {lab.dtype}; expected ({n},) int per-modality cluster ids"
            )
        self.labels = lab.astype(np.int64)
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2) if len(pairs) else np.zeros((0, 2), dtype=np.int64)
        self.true_pids = None if true_pids is None else np.asarray(true_pids, dtype=np.int64)
        if self.true_pids is not None and self.true_pids.shape != (n,):
            raise ValueError(f"true_pids has shape {self.true_pids.shape}; expected ({n},)")
        if images is not None and len(images) != n:
            raise ValueError(f"images has {len(images)} rows for {n} records")
        if sort_by not in SORT_KEYS.values():
            raise ValueError(f"sort_by={sort_by!r}: expected one of {list(SORT_KEYS.values())}")
        if sort_by == "purity" and self.true_pids is None:
            raise ValueError("sort_by='purity' needs true_pids")
        if page_size < 1 or columns < 1:
            raise ValueError(f"page_size={page_size}, columns={columns}: expected >= 1")
        self.images = images
        self.epoch = epoch
        self.page_size, self.columns = int(page_size), int(columns)
        self.thumb_size = (int(thumb_size[0]), int(thumb_size[1]))
        self.n_alternatives = int(n_alternatives)
        self.is_ir = np.array([r.modality == INFRARED for r in self.records], dtype=bool)

        # ---- clusters, centroids, similarities ----------------------------------------
        self.members: dict[str, dict[int, np.ndarray]] = {}
        cents: dict[str, np.ndarray] = {}
        self.ids: dict[str, np.ndarray] = {}
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for side, mask in (("visible", ~self.is_ir), ("infrared", self.is_ir)):
            idx = np.flatnonzero(mask & (self.labels >= 0))
            ids, inv = np.unique(self.labels[idx], return_inverse=True)
            self.ids[side] = ids
            order = np.argsort(inv, kind="stable")
            bounds = np.cumsum(np.bincount(inv, minlength=len(ids)))[:-1]
            self.members[side] = {int(c): m for c, m in zip(ids, np.split(idx[order], bounds))}
            c = (
                np.stack([xn[self.members[side][int(k)]].mean(0) for k in ids])
                if len(ids)
                else np.zeros((0, x.shape[1]))
            )
            cents[side] = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        self.row = {s: {int(c): k for k, c in enumerate(self.ids[s])} for s in SIDES}
        self.cos = cents["visible"] @ cents["infrared"].T  # (Cv, Ci)
        for a, b in p:
            for side, cid in (("visible", a), ("infrared", b)):
                if int(cid) not in self.row[side]:
                    raise ValueError(
                        f"pairs: [{a}, {b}] names {side} cluster {cid}, which no {side} record has in labels"
                    )
        self.pairs = np.unique(p, axis=0) if len(p) else p
        self.pair_set = {(int(a), int(b)) for a, b in self.pairs}
        self.majority: dict[str, dict[int, int]] = {s: {} for s in SIDES}
        self.purity: dict[str, dict[int, float]] = {s: {} for s in SIDES}
        if self.true_pids is not None:
            for side, mask in (("visible", ~self.is_ir), ("infrared", self.is_ir)):
                for c, (major, count, size) in cluster_majority(self.labels[mask], self.true_pids[mask]).items():
                    self.majority[side][c] = major
                    self.purity[side][c] = count / size

        matched_v = {a for a, _ in self.pair_set}
        matched_i = {b for _, b in self.pair_set}
        self.entries: list[Entry] = [Entry(a, b) for a, b in sorted(self.pair_set)]
        self.entries += [Entry(int(c), None) for c in self.ids["visible"] if int(c) not in matched_v]
        self.entries += [Entry(None, int(c)) for c in self.ids["infrared"] if int(c) not in matched_i]
        if not self.entries:
            raise ValueError("no cluster to inspect: every label is -1")

        # ---- corrections -------------------------------------------------------------
        self.noise: dict[str, set[int]] = {s: set() for s in SIDES}
        self.rejected: set[tuple[int, int]] = set()
        self.forced: dict[tuple[str, int], int] = {}  # anchor -> other-side id, in edit order
        self._thumb_bytes: dict[int, bytes] = {}
        self._thumb_arrays: dict[int, np.ndarray] = {}
        self._pages = {"visible": 0, "infrared": 0}
        self._shown: dict[str, int | None] = {"visible": None, "infrared": None}

        # ---- widgets (created once) -----------------------------------------------------
        th, tw = self.thumb_size
        self.sort = W.Dropdown(options=list(SORT_KEYS), description="sort by", layout=W.Layout(width="320px"))
        if self.true_pids is None:
            self.sort.options = [k for k in SORT_KEYS if SORT_KEYS[k] != "purity"]
        self.sort.value = next(k for k, v in SORT_KEYS.items() if v == sort_by)
        self.prev_button = W.Button(
            description="◀ previous", tooltip="previous cluster", layout=W.Layout(width="110px")
        )
        self.next_button = W.Button(description="next ▶", tooltip="next cluster", layout=W.Layout(width="110px"))
        self.position = W.BoundedIntText(
            value=1, min=1, max=len(self.entries), description="cluster", layout=W.Layout(width="170px")
        )
        self.position_of = W.HTML()
        self.summary = W.HTML()
        self.info = W.HTML()
        self.alternatives = W.HTML()
        self.vis_header, self.ir_header = W.HTML(), W.HTML()
        cell = f"{tw + 6}px"
        self.vis_thumbs = [self._new_thumb(W) for _ in range(self.page_size)]
        self.ir_thumbs = [self._new_thumb(W) for _ in range(self.page_size)]
        grid_layout = dict(
            grid_template_columns=f"repeat({self.columns}, {cell})", grid_gap="2px", min_height=f"{th + 6}px"
        )
        self.vis_grid = W.GridBox(children=[], layout=W.Layout(**grid_layout))
        self.ir_grid = W.GridBox(children=[], layout=W.Layout(**grid_layout))
        self.vis_prev_page, self.vis_next_page = (
            W.Button(description="◀ page", layout=W.Layout(width="80px")),
            W.Button(description="page ▶", layout=W.Layout(width="80px")),
        )
        self.ir_prev_page, self.ir_next_page = (
            W.Button(description="◀ page", layout=W.Layout(width="80px")),
            W.Button(description="page ▶", layout=W.Layout(width="80px")),
        )
        self.vis_page, self.ir_page = W.HTML(), W.HTML()
        self.noise_vis_button = W.Button(description="flag visible as noise", layout=W.Layout(width="190px"))
        self.noise_ir_button = W.Button(description="flag infrared as noise", layout=W.Layout(width="190px"))
        self.reject_button = W.Button(description="reject match", layout=W.Layout(width="140px"))
        self.reassign_choice = W.Dropdown(options=[], description="reassign to", layout=W.Layout(width="340px"))
        self.reassign_button = W.Button(description="reassign match", layout=W.Layout(width="140px"))
        self.reset_button = W.Button(description="undo corrections here", layout=W.Layout(width="190px"))
        self.export_view = W.HTML()

        def panel(head, grid, prev, nxt, page):
            return W.VBox(
                [head, grid, W.HBox([prev, page, nxt])],
                layout=W.Layout(width=f"{self.columns * (tw + 8) + 20}px", border="1px solid #ccc", padding="4px"),
            )

        self.widget = W.VBox(
            [
                W.HBox([self.sort, self.prev_button, self.position, self.position_of, self.next_button]),
                self.summary,
                self.info,
                W.HBox(
                    [
                        panel(self.vis_header, self.vis_grid, self.vis_prev_page, self.vis_next_page, self.vis_page),
                        panel(self.ir_header, self.ir_grid, self.ir_prev_page, self.ir_next_page, self.ir_page),
                    ]
                ),
                self.alternatives,
                W.HBox([self.noise_vis_button, self.noise_ir_button, self.reject_button]),
                W.HBox([self.reassign_choice, self.reassign_button, self.reset_button]),
                self.export_view,
            ]
        )

        self.sort.observe(lambda ch: self._resort(), names="value")
        self.position.observe(lambda ch: self._render(), names="value")
        self.prev_button.on_click(lambda b: self._step(-1))
        self.next_button.on_click(lambda b: self._step(+1))
        self.vis_prev_page.on_click(lambda b: self._turn("visible", -1))
        self.vis_next_page.on_click(lambda b: self._turn("visible", +1))
        self.ir_prev_page.on_click(lambda b: self._turn("infrared", -1))
        self.ir_next_page.on_click(lambda b: self._turn("infrared", +1))
        self.noise_vis_button.on_click(lambda b: self._toggle_noise("visible"))
        self.noise_ir_button.on_click(lambda b: self._toggle_noise("infrared"))
        self.reject_button.on_click(lambda b: self._toggle_reject())
        self.reassign_button.on_click(lambda b: self._reassign_current())
        self.reset_button.on_click(lambda b: self._reset_current())
        self._order = self._sorted_entries()
        self._render()

    # ------------------------------------------------------------------------------ API

    @classmethod
    def from_epoch(cls, records: Sequence[Record], epoch_labels: Any, true_pids=None, **kw) -> "PseudoLabelInspector":
        """Inspector of a :class:`cmamlib.training.selftrain.EpochLabels` (its features,
        raw per-modality labels and raw pairs)."""
        return cls(
            records,
            epoch_labels.features,
            epoch_labels.modality_labels(raw=True),
            epoch_labels.raw_pairs,
            true_pids,
            **kw,
        )

    @property
    def current(self) -> Entry:
        """The entry on display."""
        return self._order[self.position.value - 1]

    @property
    def order(self) -> list[Entry]:
        """Entries in the current sort order."""
        return list(self._order)

    def show(self, entry: Entry) -> None:
        """Display ``entry`` (sets ``position``)."""
        self.position.value = self._order.index(entry) + 1

    def flag_noise(self, side: str, cluster: int, flag: bool = True) -> None:
        """Flag (or unflag) ``side``'s ``cluster`` as noise (its images leave training)."""
        self._check_cluster(side, cluster)
        (self.noise[side].add if flag else self.noise[side].discard)(int(cluster))
        self._render()

    def reject(self, vis: int, ir: int, flag: bool = True) -> None:
        """Reject (or restore) the matched pair ``(vis, ir)`` of the clustering."""
        if (int(vis), int(ir)) not in self.pair_set:
            raise ValueError(f"reject: [{vis}, {ir}] is not a matched pair of this clustering")
        (self.rejected.add if flag else self.rejected.discard)((int(vis), int(ir)))
        self._render()

    def reassign(self, vis: int, ir: int, anchor: str = "visible") -> None:
        """Force the pair ``(vis, ir)``: it replaces every pair of either cluster.
        ``anchor`` is the side whose entry keeps the reassignment (an earlier
        reassignment of the same anchor is replaced)."""
        self._check_cluster("visible", vis)
        self._check_cluster("infrared", ir)
        key, other = (("visible", int(vis)), int(ir)) if anchor == "visible" else (("infrared", int(ir)), int(vis))
        self.forced.pop(key, None)
        # a forced pair replaces every pair holding either cluster (apply_overrides)
        for k in [
            k
            for k, o in self.forced.items()
            if self._forced_pair(k, o)[0] == int(vis) or self._forced_pair(k, o)[1] == int(ir)
        ]:
            del self.forced[k]
        self.forced[key] = other
        self._render()

    def export(self, path: str | Path | None = None) -> dict:
        """The corrections as a ``label_overrides`` dict (see the class docstring);
        also written as JSON to ``path`` when given."""
        nv, ni = self.noise["visible"], self.noise["infrared"]
        out: dict[str, Any] = {
            "noise_clusters": {"visible": sorted(nv), "infrared": sorted(ni)},
            "reject_pairs": [[a, b] for a, b in sorted(self.rejected) if a not in nv and b not in ni],
            "force_pairs": [
                list(p)
                for p in (self._forced_pair(k, o) for k, o in self.forced.items())
                if p[0] not in nv and p[1] not in ni
            ],
        }
        if self.epoch is not None:
            out["epochs"] = [int(self.epoch)]
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(out, indent=2) + "\n")
        return out

    def corrected(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vis_labels, ir_labels, pairs)`` after the corrections, exactly as
        :func:`cmamlib.training.selftrain.apply_overrides` computes them from
        :meth:`export` (``vis_labels`` / ``ir_labels`` in record order within each
        modality)."""
        from .training.selftrain import apply_overrides

        return apply_overrides(self.labels[~self.is_ir], self.labels[self.is_ir], self.pairs, self.export())

    def stats(self) -> dict:
        """Counts of the clustering and of the corrections; with true ids the fraction
        of correct pairs (same majority identity) before and after the corrections."""
        _, _, pairs_now = self.corrected()
        out = {
            "visible_clusters": len(self.ids["visible"]),
            "infrared_clusters": len(self.ids["infrared"]),
            "visible_noise_images": int(((self.labels < 0) & ~self.is_ir).sum()),
            "infrared_noise_images": int(((self.labels < 0) & self.is_ir).sum()),
            "pairs": len(self.pair_set),
            "pairs_after_corrections": int(len(pairs_now)),
            "entries": len(self.entries),
            "noise_flags": len(self.noise["visible"]) + len(self.noise["infrared"]),
            "rejected": len(self.rejected),
            "reassigned": len(self.forced),
        }
        if self.true_pids is not None:
            out["pairs_correct"] = self._correct(sorted(self.pair_set))
            out["pairs_correct_fraction"] = (
                out["pairs_correct"] / max(len(self.pair_set), 1) if self.pair_set else float("nan")
            )
            out["pairs_correct_after_corrections"] = self._correct(pairs_now)
        return out

    def similarity(self, vis: int, ir: int) -> float:
        """Cosine similarity of the two cluster centroids."""
        return float(self.cos[self.row["visible"][int(vis)], self.row["infrared"][int(ir)]])

    def nearest(self, side: str, cluster: int, k: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` clusters of the *other* modality nearest to ``side``'s ``cluster``
        (centroid cosine, highest first): ``[(id, cosine), ...]``."""
        k = self.n_alternatives if k is None else k
        if side == "visible":
            sims, ids = self.cos[self.row["visible"][int(cluster)]], self.ids["infrared"]
        else:
            sims, ids = self.cos[:, self.row["infrared"][int(cluster)]], self.ids["visible"]
        order = np.argsort(-sims, kind="stable")[: max(k, 0)]
        return [(int(ids[j]), float(sims[j])) for j in order]

    def snapshot(
        self, path: str | Path, n_clusters: int = 6, per_side: int = 8, start: int = 0, dpi: int = 100
    ) -> Path:
        """Save a PNG (matplotlib) of ``n_clusters`` entries from position ``start`` of
        the current order: per row, up to ``per_side`` visible thumbnails, then up to
        ``per_side`` infrared thumbnails of the matched cluster, titled with ids, sizes,
        similarity, purity and the correction status. Returns the path."""
        import matplotlib.pyplot as plt

        entries = self._order[start : start + n_clusters]
        if not entries:
            raise ValueError(f"snapshot: no entry at position {start} ({len(self._order)} entries)")
        th, tw = self.thumb_size
        pad, gap = 2, 12
        strip_w = 2 * per_side * (tw + pad) + gap
        scale = 1.25 / dpi  # inches per thumbnail pixel: thumbnails at about 1.25x their size
        fig, axes = plt.subplots(
            len(entries), 1, figsize=(strip_w * scale + 0.3, len(entries) * ((th + pad) * scale + 0.3)), squeeze=False
        )
        for r, e in enumerate(entries):
            vis_id, ir_id = self._vis_shown(e), self._partner_shown(e)
            strip = np.full((th + pad, strip_w, 3), 255, dtype=np.uint8)
            for side, cid, x0 in (("visible", vis_id, 0), ("infrared", ir_id, per_side * (tw + pad) + gap)):
                if cid is None:
                    continue
                for j, i in enumerate(self.members[side][cid][:per_side]):
                    x = x0 + j * (tw + pad)
                    strip[1 : th + 1, x + 1 : x + tw + 1] = self._thumb_array(int(i))
                    if self.true_pids is not None and self.true_pids[i] != self.majority[side][cid]:
                        strip[:, x : x + tw + 2][[0, -1]] = (220, 0, 0)  # red frame: not the majority id
                        strip[:, [x, x + tw + 1]] = (220, 0, 0)
            ax = axes[r, 0]
            ax.imshow(strip)
            ax.axis("off")
            ax.set_title(self._row_title(e, ir_id), loc="left", fontsize=7)
        fig.suptitle(
            f"{len(self.ids['visible'])} visible / {len(self.ids['infrared'])} infrared clusters, sorted by "
            f"{SORT_KEYS[self.sort.value]}; left: visible cluster, right: its matched infrared cluster"
            + ("; red frame: not the cluster's majority id" if self.true_pids is not None else ""),
            fontsize=8,
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return path

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------------ internals

    def _new_thumb(self, W):
        th, tw = self.thumb_size
        return W.Image(
            value=b"",
            format="jpeg",
            width=tw,
            height=th,
            layout=W.Layout(width=f"{tw + 4}px", height=f"{th + 4}px", border="2px solid transparent"),
        )

    def _check_cluster(self, side: str, cid: int) -> None:
        if side not in SIDES:
            raise ValueError(f"side {side!r}: expected one of {SIDES}")
        if int(cid) not in self.row[side]:
            raise ValueError(f"{side} cluster {cid} does not exist ({len(self.ids[side])} {side} clusters)")

    def _forced_pair(self, key: tuple[str, int], other: int) -> tuple[int, int]:
        return (key[1], other) if key[0] == "visible" else (other, key[1])

    def _correct(self, pairs) -> int:
        mv, mi = self.majority["visible"], self.majority["infrared"]
        return int(sum(mv[int(a)] == mi[int(b)] for a, b in pairs))

    def _entry_size(self, e: Entry) -> int:
        return (len(self.members["visible"][e.vis]) if e.vis is not None else 0) + (
            len(self.members["infrared"][e.ir]) if e.ir is not None else 0
        )

    def _entry_purity(self, e: Entry) -> float:
        vals = [self.purity[s][c] for s, c in (("visible", e.vis), ("infrared", e.ir)) if c is not None]
        return min(vals)

    def _entry_similarity(self, e: Entry) -> float:
        return self.similarity(e.vis, e.ir) if (e.vis is not None and e.ir is not None) else math.inf

    def _sorted_entries(self) -> list[Entry]:
        key = SORT_KEYS[self.sort.value]
        if key == "size":
            return sorted(self.entries, key=lambda e: -self._entry_size(e))
        if key == "purity":
            return sorted(self.entries, key=lambda e: (self._entry_purity(e), -self._entry_size(e)))
        return sorted(self.entries, key=lambda e: (self._entry_similarity(e), -self._entry_size(e)))

    def _resort(self) -> None:
        self._order = self._sorted_entries()
        if self.position.value != 1:
            self.position.value = 1  # triggers _render
        else:
            self._render()

    def _step(self, d: int) -> None:
        self.position.value = min(max(self.position.value + d, 1), len(self._order))

    def _turn(self, side: str, d: int) -> None:
        cid = self._shown[side]
        if cid is None:
            return
        pages = max(1, -(-len(self.members[side][cid]) // self.page_size))
        self._pages[side] = min(max(self._pages[side] + d, 0), pages - 1)
        self._render_side(side, cid, keep_page=True)

    def _partner_shown(self, e: Entry) -> int | None:
        """Infrared cluster displayed with ``e``: its reassignment when any, else its own."""
        if e.vis is not None and ("visible", e.vis) in self.forced:
            return self.forced[("visible", e.vis)]
        return e.ir

    def _vis_shown(self, e: Entry) -> int | None:
        if e.vis is None and ("infrared", e.ir) in self.forced:
            return self.forced[("infrared", e.ir)]
        return e.vis

    def _status(self, e: Entry, vis: int | None, ir: int | None, pairs_now: set) -> str:
        parts = []
        if vis is not None and vis in self.noise["visible"]:
            parts.append("visible cluster flagged as noise")
        if ir is not None and ir in self.noise["infrared"]:
            parts.append("infrared cluster flagged as noise")
        if vis is not None and ir is not None:
            if (e.vis, e.ir) in self.rejected:
                parts.append("match rejected")
            if e.anchor in self.forced:
                was = e.ir if e.vis is not None else e.vis
                parts.append(f"reassigned (was {'infrared' if e.vis is not None else 'visible'} {was})")
            parts.append("paired in training" if (vis, ir) in pairs_now else "not paired in training")
        else:
            parts.append("unmatched cluster")
        return "; ".join(parts)

    def _cluster_line(self, side: str, cid: int | None) -> str:
        if cid is None:
            return f"<b>{side}</b>: none"
        n = len(self.members[side][cid])
        s = f"<b>{side} {cid}</b>: {n} images"
        if self.true_pids is not None:
            s += f", purity {self.purity[side][cid]:.2f} (majority id {self.majority[side][cid]})"
        if cid in self.noise[side]:
            s += " <span style='color:#c00'>[noise]</span>"
        return s

    def _row_title(self, e: Entry, ir: int | None) -> str:
        vis = self._vis_shown(e)
        t = []
        for side, cid in (("V", vis), ("IR", ir)):
            if cid is None:
                t.append(f"{side} -")
                continue
            side_name = "visible" if side == "V" else "infrared"
            s = f"{side} {cid} ({len(self.members[side_name][cid])} img"
            if self.true_pids is not None:
                s += f", purity {self.purity[side_name][cid]:.2f}, id {self.majority[side_name][cid]}"
            t.append(s + ")")
        if vis is not None and ir is not None:
            t.append(f"sim {self.similarity(vis, ir):.3f}")
            if self.true_pids is not None:
                t.append("correct" if self.majority["visible"][vis] == self.majority["infrared"][ir] else "WRONG")
        _, _, pairs_now = self.corrected()
        st = self._status(e, vis, ir, {(int(a), int(b)) for a, b in pairs_now})
        return "   ".join(t) + f"  [{st}]"

    def _thumb_array(self, i: int) -> np.ndarray:
        a = self._thumb_arrays.get(i)
        if a is None:
            th, tw = self.thumb_size
            if self.images is not None:
                im = self.images[i]
                im = im.numpy() if isinstance(im, torch.Tensor) else np.asarray(im)
                pil = PILImage.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)).astype(np.uint8))
            else:
                pil = PILImage.open(self.records[i].path).convert("RGB")
            a = np.asarray(pil.resize((tw, th), PILImage.BILINEAR))
            self._thumb_arrays[i] = a
        return a

    def thumbnail(self, i: int) -> bytes:
        """JPEG bytes of record ``i``'s thumbnail (cached)."""
        b = self._thumb_bytes.get(i)
        if b is None:
            buf = io.BytesIO()
            PILImage.fromarray(self._thumb_array(i)).save(buf, format="JPEG", quality=85)
            b = self._thumb_bytes[i] = buf.getvalue()
        return b

    def _render_side(self, side: str, cid: int | None, keep_page: bool = False) -> None:
        grid, pool = (self.vis_grid, self.vis_thumbs) if side == "visible" else (self.ir_grid, self.ir_thumbs)
        header, page_lbl = (self.vis_header, self.vis_page) if side == "visible" else (self.ir_header, self.ir_page)
        prev_b, next_b = (
            (self.vis_prev_page, self.vis_next_page) if side == "visible" else (self.ir_prev_page, self.ir_next_page)
        )
        if not keep_page or self._shown[side] != cid:
            self._pages[side] = 0
        self._shown[side] = cid
        header.value = self._cluster_line(side, cid)
        if cid is None:
            grid.children = ()
            page_lbl.value = "no cluster"
            prev_b.disabled = next_b.disabled = True
            return
        m = self.members[side][cid]
        pages = max(1, -(-len(m) // self.page_size))
        pg = self._pages[side]
        shown = m[pg * self.page_size : (pg + 1) * self.page_size]
        maj = self.majority[side].get(cid)
        for w, i in zip(pool, shown):
            # no ``tooltip`` on Image widgets: the JupyterLab ImageView (jupyterlab_widgets 3.0)
            # then fails to render ("reading 'length'" of the description an Image lacks)
            w.value = self.thumbnail(int(i))
            bad = self.true_pids is not None and int(self.true_pids[i]) != maj
            w.layout.border = "2px solid #d00" if bad else "2px solid transparent"
        grid.children = tuple(pool[: len(shown)])
        page_lbl.value = f"&nbsp;page {pg + 1}/{pages} · {len(m)} images&nbsp;"
        prev_b.disabled = pg == 0
        next_b.disabled = pg >= pages - 1

    def _render(self) -> None:
        e = self.current
        vis, ir = self._vis_shown(e), self._partner_shown(e)
        _, _, pairs_now = self.corrected()
        pairs_now_set = {(int(a), int(b)) for a, b in pairs_now}
        st = self.stats()
        self.position_of.value = f"&nbsp;of {len(self._order)}&nbsp;"
        self.prev_button.disabled = self.position.value <= 1
        self.next_button.disabled = self.position.value >= len(self._order)
        summ = (
            f"{st['visible_clusters']} visible / {st['infrared_clusters']} "
            f"infrared clusters, {st['pairs']} matched pairs "
            f"({st['pairs_after_corrections']} after corrections); corrections: {st['noise_flags']} noise, "
            f"{st['rejected']} rejected, {st['reassigned']} reassigned"
        )
        if self.true_pids is not None and st["pairs"]:
            summ += (
                f"; correct pairs (true ids) {st['pairs_correct']}/{st['pairs']} → "
                f"{st['pairs_correct_after_corrections']}/{st['pairs_after_corrections']}"
            )
        self.summary.value = f"<small>{summ}</small>"
        sim = (
            f"centroid cosine similarity <b>{self.similarity(vis, ir):.3f}</b>"
            if (vis is not None and ir is not None)
            else "no match"
        )
        corr = ""
        if self.true_pids is not None and vis is not None and ir is not None:
            ok = self.majority["visible"][vis] == self.majority["infrared"][ir]
            corr = " · pair <b style='color:%s'>%s</b> (majority ids)" % (
                ("#080", "correct") if ok else ("#c00", "wrong")
            )
        self.info.value = f"{sim}{corr} · <i>{html.escape(self._status(e, vis, ir, pairs_now_set))}</i>"
        self._render_side("visible", vis)
        self._render_side("infrared", ir)

        # nearest alternatives of both shown clusters
        rows = []
        for side, cid in (("visible", vis), ("infrared", ir)):
            if cid is None:
                continue
            other = "infrared" if side == "visible" else "visible"
            alts = []
            for oid, s in self.nearest(side, cid):
                a = f"{other} {oid} ({s:.3f}, {len(self.members[other][oid])} img"
                if self.true_pids is not None:
                    a += f", id {self.majority[other][oid]}"
                a += ")"
                if (side == "visible" and oid == ir) or (side == "infrared" and oid == vis):
                    a = f"<b>{a}</b>"
                alts.append(a)
            rows.append(f"nearest to {side} {cid}: " + ", ".join(alts))
        self.alternatives.value = "<small>" + "<br>".join(rows) + "</small>"

        # buttons reflect the state of the shown clusters
        for b, side, cid in ((self.noise_vis_button, "visible", vis), (self.noise_ir_button, "infrared", ir)):
            b.disabled = cid is None
            flagged = cid is not None and cid in self.noise[side]
            b.description = f"unflag {side} noise" if flagged else f"flag {side} as noise"
            b.button_style = "danger" if flagged else ""
        has_pair = e.vis is not None and e.ir is not None
        if e.anchor in self.forced:
            self.reject_button.description, self.reject_button.disabled = "drop reassignment", False
            self.reject_button.button_style = "warning"
        else:
            rej = has_pair and (e.vis, e.ir) in self.rejected
            self.reject_button.description = "restore match" if rej else "reject match"
            self.reject_button.button_style = "warning" if rej else ""
            self.reject_button.disabled = not has_pair
        side, cid = e.anchor
        other = "infrared" if side == "visible" else "visible"
        opts = []
        for oid, s in self.nearest(side, cid, k=len(self.ids[other])):
            opts.append((f"{other} {oid} (cos {s:.3f}, {len(self.members[other][oid])} img)", oid))
        self.reassign_choice.options = opts
        self.reassign_choice.description = f"{other} →"
        current_other = ir if side == "visible" else vis
        if opts:
            pick = next((oid for _, oid in opts if oid != current_other), opts[0][1])
            self.reassign_choice.value = pick
        self.reassign_button.disabled = not opts
        self.export_view.value = (
            "<details><summary>label_overrides (export)</summary><pre>"
            + html.escape(json.dumps(self.export()))
            + "</pre></details>"
        )

    def _toggle_noise(self, side: str) -> None:
        e = self.current
        cid = self._vis_shown(e) if side == "visible" else self._partner_shown(e)
        if cid is None:
            return
        self.flag_noise(side, cid, flag=cid not in self.noise[side])

    def _toggle_reject(self) -> None:
        e = self.current
        if e.anchor in self.forced:
            del self.forced[e.anchor]
            self._render()
            return
        if e.vis is None or e.ir is None:
            return
        self.reject(e.vis, e.ir, flag=(e.vis, e.ir) not in self.rejected)

    def _reassign_current(self) -> None:
        e = self.current
        new = self.reassign_choice.value
        if new is None:
            return
        side, cid = e.anchor
        if side == "visible":
            self.reassign(cid, new, anchor="visible")
        else:
            self.reassign(new, cid, anchor="infrared")

    def _reset_current(self) -> None:
        e = self.current
        self.forced.pop(e.anchor, None)
        if e.vis is not None and e.ir is not None:
            self.rejected.discard((e.vis, e.ir))
        for side, cid in (
            ("visible", self._vis_shown(e)),
            ("infrared", self._partner_shown(e)),
            ("visible", e.vis),
            ("infrared", e.ir),
        ):
            if cid is not None:
                self.noise[side].discard(cid)
        self._render()
