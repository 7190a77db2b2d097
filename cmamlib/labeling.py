"""Bipartite cross-modality pseudo labels: match visible clusters to infrared clusters.

Stage 2 clusters each modality on its own (docs/method.md, "Stage 2", item 3); this module
links the two label sets so that a matched visible / infrared cluster pair shares one
identity label.

* :func:`match_clusters`: a minimum-cost bipartite matching (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``) of visible to infrared cluster centroids.
  Three ways of handling unequal cluster counts:

  - ``"ward_merge"`` (default, the CMAM authors' code, wuancong/CMAM): the side with
    more clusters is merged down to the other side's count by Ward agglomerative
    clustering of its centroids (scipy ``linkage(method="ward")`` +
    ``fcluster(criterion="maxclust")``), then one perfect matching of the merged groups
    with the other side. Every cluster of both sides is paired (many-to-one on the
    merged side). ``ward_space``: ``"l2"`` clusters the L2-normalised centroids and
    gives a merged group the re-normalised mean of its normalised centroids
    (*reconstruction*); ``"raw"`` (the code) clusters the centroids as given and gives a
    merged group the mean of its samples (the ``counts``-weighted mean of its centroids),
    L2-normalised for the cost.
  - ``"second_round"`` (PGM: Wu & Ye, "Unsupervised Visible-Infrared Person
    Re-Identification via Progressive Graph Matching and Alternate Learning", CVPR
    2023): a rectangular Hungarian pass, then the still unmatched clusters of the
    larger side are matched again against the whole smaller side, round after round,
    until every cluster is paired (many-to-one).
  - ``"drop"``: one rectangular Hungarian pass; the unmatched clusters of the larger
    side stay unmatched (modality-specific identities).

  Costs between L2-normalised centroids: ``"sqeuclidean"`` ``|v - r|^2 = 2 - 2 cos``
  (default, the authors' code), ``"cosine"`` ``1 - cos``, ``"inv_exp_cos"``
  ``1 / exp(cos)`` (PGM).
* :func:`unify_labels`: per-modality cluster labels + matched pairs -> one shared
  label space (one label per connected component of the pair graph).
* :func:`cluster_centroids`: mean feature of every non-noise cluster.

Every function is tested against brute-force / plain-loop oracles in
``tests/test_labeling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.cluster.hierarchy import cut_tree, fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

__all__ = ["COSTS", "UNEQUAL", "WARD_SPACES", "MatchResult", "cluster_centroids", "match_clusters", "unify_labels"]

COSTS = ("sqeuclidean", "cosine", "inv_exp_cos")
UNEQUAL = ("ward_merge", "second_round", "drop")
WARD_SPACES = ("l2", "raw")


@dataclass
class MatchResult:
    """Result of :func:`match_clusters`.

    Attributes:
        pairs: ``(M, 2)`` int64 rows ``(vis_cluster, ir_cluster)``, cluster indices are
            row indices of the centroid arrays; sorted by visible then infrared index.
        similarity: ``(M,)`` float64 cosine similarity of the two *original* (not
            merged) centroids of every pair.
        unmatched_vis: sorted int64 indices of visible clusters in no pair.
        unmatched_ir: sorted int64 indices of infrared clusters in no pair.
        cost: total cost of the assignment(s) that produced the pairs, before any
            ``threshold`` rejection ("ward_merge": the perfect matching of merged
            groups; "second_round": summed over rounds).
    """

    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    similarity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    unmatched_vis: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unmatched_ir: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cost: float = 0.0

    @property
    def num_pairs(self) -> int:
        return int(self.pairs.shape[0])


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _as_centroids(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (C, D) array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        rows = np.flatnonzero(~np.isfinite(a).all(1))
        raise ValueError(f"{name} {a.shape} contains NaN/inf values in rows {rows[:5].tolist()}")
    return a


def _normalize(a: np.ndarray, name: str) -> np.ndarray:
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    zero = np.flatnonzero(norm[:, 0] == 0)
    if len(zero):
        raise ValueError(f"{name} has zero-norm rows {zero[:5].tolist()}: cannot L2-normalise")
    return a / norm


def _cost_from_cos(cos: np.ndarray, cost: str) -> np.ndarray:
    if cost == "sqeuclidean":
        return np.maximum(2.0 - 2.0 * cos, 0.0)
    if cost == "cosine":
        return 1.0 - cos
    return np.exp(-cos)  # inv_exp_cos: 1 / exp(cos)


def _ward_groups(x: np.ndarray, k: int) -> np.ndarray:
    """Group labels ``0..k-1`` of the rows of ``x`` (L2-normalised, ``len(x) > k >= 1``).

    ``fcluster(maxclust=k)`` on the Ward tree, as the authors' code. When merge heights
    tie (e.g. identical centroids), ``fcluster`` can return fewer than ``k`` groups;
    then the tree is cut after exactly ``len(x) - k`` merges in linkage order
    (``scipy.cluster.hierarchy.cut_tree``), which always gives ``k`` groups.
    """
    z = linkage(x, method="ward")
    g = fcluster(z, t=k, criterion="maxclust")
    _, g = np.unique(g, return_inverse=True)
    if g.max() + 1 != k:
        g = cut_tree(z, n_clusters=k).ravel()
        _, g = np.unique(g, return_inverse=True)
    if g.max() + 1 != k:  # pragma: no cover - cut_tree guarantees k groups
        raise RuntimeError(f"Ward merge produced {g.max() + 1} groups, expected {k}")
    return g.astype(np.int64)


def _group_means(x: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, groups, x)
    return _normalize(sums / np.bincount(groups, minlength=k)[:, None], "merged group centroids")


# --------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------


def match_clusters(
    vis_centroids: np.ndarray | torch.Tensor,
    ir_centroids: np.ndarray | torch.Tensor,
    cost: str = "sqeuclidean",
    unequal: str = "ward_merge",
    threshold: float | None = None,
    ward_space: str = "l2",
    vis_counts: np.ndarray | None = None,
    ir_counts: np.ndarray | None = None,
) -> MatchResult:
    """Match visible clusters to infrared clusters by a minimum-cost bipartite matching.

    Args:
        vis_centroids: ``(Cv, D)`` float, one row per visible cluster (numpy or torch);
            L2-normalised here.
        ir_centroids: ``(Ci, D)`` float, one row per infrared cluster.
        cost: ``"sqeuclidean"`` (``2 - 2 cos``, default, the authors' code),
            ``"cosine"`` (``1 - cos``) or ``"inv_exp_cos"`` (``1 / exp(cos)``, PGM).
        unequal: ``"ward_merge"`` (default, the authors' code), ``"second_round"`` (PGM)
            or ``"drop"``; see the module docstring. With ``Cv == Ci`` all three give the
            same perfect matching.
        threshold: optional minimum cosine similarity of the two original centroids of
            a pair; pairs below it are rejected after the matching and their clusters
            become unmatched unless they are in another kept pair.
        ward_space: ``"l2"`` (default, *reconstruction*) or ``"raw"`` (the code): the
            centroids the Ward merge clusters (module docstring).
        vis_counts / ir_counts: ``(Cv,)`` / ``(Ci,)`` samples per cluster, weighting a
            merged group's centroid with ``ward_space="raw"`` (the mean of its samples);
            None: equal weights.

    Returns:
        :class:`MatchResult`. When one side is empty there is nothing to match: no
        pairs, every cluster of the other side unmatched, cost 0.

    Raises:
        ValueError: on a non-2-D input, different feature sizes ``D``, NaN/inf or
            zero-norm centroids, or an unknown ``cost`` / ``unequal``.
    """
    if cost not in COSTS:
        raise ValueError(f"cost {cost!r}: expected one of {COSTS}")
    if unequal not in UNEQUAL:
        raise ValueError(f"unequal {unequal!r}: expected one of {UNEQUAL}")
    if ward_space not in WARD_SPACES:
        raise ValueError(f"ward_space {ward_space!r}: expected one of {WARD_SPACES}")
    v = _as_centroids(vis_centroids, "vis_centroids")
    r = _as_centroids(ir_centroids, "ir_centroids")
    if v.shape[1] != r.shape[1]:
        raise ValueError(f"vis_centroids {v.shape} and ir_centroids {r.shape} have different feature sizes D")
    nv, ni = v.shape[0], r.shape[0]
    if nv == 0 or ni == 0:
        return MatchResult(unmatched_vis=np.arange(nv, dtype=np.int64), unmatched_ir=np.arange(ni, dtype=np.int64))
    v_raw, r_raw = v, r
    v = _normalize(v, "vis_centroids")
    r = _normalize(r, "ir_centroids")
    cos = v @ r.T  # (Cv, Ci)

    if unequal == "ward_merge" and nv != ni:
        if ward_space == "raw":
            wv = _as_counts(vis_counts, nv, "vis_counts")
            wr = _as_counts(ir_counts, ni, "ir_counts")
            pairs, total = _match_ward(v_raw, r_raw, cost, wv, wr, renormalise=False)
        else:
            pairs, total = _match_ward(v, r, cost)
    elif unequal == "second_round":
        pairs, total = _match_rounds(_cost_from_cos(cos, cost))
    else:  # "drop", or ward_merge with equal counts
        rows, cols = linear_sum_assignment(_cost_from_cos(cos, cost))
        pairs = np.stack([rows, cols], 1)
        total = float(_cost_from_cos(cos[rows, cols], cost).sum())

    pairs = pairs.astype(np.int64).reshape(-1, 2)
    sim = cos[pairs[:, 0], pairs[:, 1]]
    if threshold is not None:
        keep = sim >= float(threshold)
        pairs, sim = pairs[keep], sim[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs, sim = pairs[order], sim[order]
    return MatchResult(
        pairs=pairs,
        similarity=sim.astype(np.float64),
        unmatched_vis=np.setdiff1d(np.arange(nv), pairs[:, 0]).astype(np.int64),
        unmatched_ir=np.setdiff1d(np.arange(ni), pairs[:, 1]).astype(np.int64),
        cost=total,
    )


def _as_counts(counts: Any, n: int, name: str) -> np.ndarray:
    if counts is None:
        return np.ones(n)
    c = _to_numpy(counts, name).astype(np.float64).ravel()
    if c.shape != (n,) or not np.isfinite(c).all() or (c <= 0).any():
        raise ValueError(f"{name}: expected {n} positive sample counts, got {c.shape} {c[:5].tolist()}")
    return c


def _match_ward(
    v: np.ndarray,
    r: np.ndarray,
    cost: str,
    wv: np.ndarray | None = None,
    wr: np.ndarray | None = None,
    renormalise: bool = True,
) -> tuple[np.ndarray, float]:
    """Merge the larger side down by Ward clustering, then one perfect matching.

    ``renormalise`` (``ward_space="l2"``): ``v`` / ``r`` are L2-normalised and a group's
    centroid is the mean of its rows; else (``"raw"``) ``v`` / ``r`` are the raw centroids,
    a group's centroid the ``w``-weighted mean of its rows (the mean of its samples), and
    every centroid is L2-normalised for the cost."""
    vis_larger = v.shape[0] > r.shape[0]
    big, small = (v, r) if vis_larger else (r, v)
    k = small.shape[0]
    groups = _ward_groups(big, k)  # (n_big,) in 0..k-1
    if renormalise:
        merged = _group_means(big, groups, k)  # (k, D)
    else:
        w = (wv if vis_larger else wr)[:, None]
        sums, tot = np.zeros((k, big.shape[1])), np.zeros((k, 1))
        np.add.at(sums, groups, w * big)
        np.add.at(tot, groups, w)
        merged = _normalize(sums / tot, "merged group centroids")
        small = _normalize(small, "centroids")
    c = _cost_from_cos(merged @ small.T, cost)  # (k groups, k small)
    if not vis_larger:
        c = c.T  # rows always visible
    rows, cols = linear_sum_assignment(c)
    total = float(c[rows, cols].sum())
    if vis_larger:
        partner = np.empty(k, dtype=np.int64)
        partner[rows] = cols  # group -> ir cluster
        pairs = np.stack([np.arange(big.shape[0]), partner[groups]], 1)
    else:
        partner = np.empty(k, dtype=np.int64)
        partner[cols] = rows  # group -> vis cluster
        pairs = np.stack([partner[groups], np.arange(big.shape[0])], 1)
    return pairs, total


def _match_rounds(c: np.ndarray) -> tuple[np.ndarray, float]:
    """Hungarian rounds until every cluster of the larger side is matched (PGM)."""
    vis_larger = c.shape[0] > c.shape[1]
    if not vis_larger:
        c = c.T  # rows: larger side
    remaining = np.arange(c.shape[0])
    found, total = [], 0.0
    while len(remaining):
        sub = c[remaining]
        rows, cols = linear_sum_assignment(sub)
        total += float(sub[rows, cols].sum())
        found.append(np.stack([remaining[rows], cols], 1))
        remaining = np.delete(remaining, rows)
    pairs = np.concatenate(found)
    return (pairs if vis_larger else pairs[:, ::-1]), total


# --------------------------------------------------------------------------------------
# shared labels
# --------------------------------------------------------------------------------------


def _as_labels(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of cluster labels, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < -1:
        raise ValueError(f"{name} has labels below -1 (min {a.min()}); -1 is the only noise label")
    return a


def unify_labels(
    vis_labels: np.ndarray | torch.Tensor,
    ir_labels: np.ndarray | torch.Tensor,
    pairs: np.ndarray,
    keep_unmatched: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Map per-modality cluster labels to one shared cross-modality label space.

    Every connected component of the bipartite pair graph (a many-to-one matching gives
    components of several clusters) becomes one label. Clusters in no pair become
    singleton labels when ``keep_unmatched`` else ``-1``; noise (``-1``) stays ``-1``.
    Labels are ``0..L-1`` in the order of the component's smallest infrared cluster id,
    then its smallest visible cluster id (visible-only components after all components
    with an infrared cluster). So with a perfect one-to-one matching and infrared labels
    ``0..C-1`` the infrared labels are unchanged and the visible labels are renamed to
    their matched infrared labels, as the authors' code does.

    Args:
        vis_labels: ``(Nv,)`` int visible cluster labels, ``-1`` noise.
        ir_labels: ``(Ni,)`` int infrared cluster labels, ``-1`` noise.
        pairs: ``(M, 2)`` int ``(vis_cluster, ir_cluster)`` pairs, ids as they appear in
            the label arrays (:attr:`MatchResult.pairs` indexes centroid rows: map it
            through the ``cluster_ids`` of :func:`cluster_centroids`; for labels
            ``0..C-1`` both are the same).
        keep_unmatched: give clusters in no pair their own label (else ``-1``).

    Returns:
        ``(vis_out (Nv,), ir_out (Ni,))`` int64 shared labels, ``-1`` for dropped samples.

    Raises:
        ValueError: on labels below ``-1``, non-integer labels, a malformed ``pairs``
            array or a pair naming a cluster id absent from the labels.
    """
    vl = _as_labels(vis_labels, "vis_labels")
    il = _as_labels(ir_labels, "ir_labels")
    p = _to_numpy(pairs, "pairs")
    if p.size == 0:
        p = np.zeros((0, 2), dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must be an (M, 2) array, got shape {p.shape}")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"pairs must hold integer cluster ids, got dtype {p.dtype}")
    p = p.astype(np.int64)

    vis_ids = np.unique(vl[vl >= 0])
    ir_ids = np.unique(il[il >= 0])
    for col, ids, side in ((0, vis_ids, "visible"), (1, ir_ids, "infrared")):
        missing = np.setdiff1d(p[:, col], ids)
        if len(missing):
            raise ValueError(
                f"pairs name {side} cluster ids {missing[:5].tolist()} that are not in the "
                f"{side} labels (ids present: {len(ids)}, max {ids.max() if len(ids) else None})"
            )
    nv, ni = len(vis_ids), len(ir_ids)
    a = np.searchsorted(vis_ids, p[:, 0])
    b = nv + np.searchsorted(ir_ids, p[:, 1])
    n = nv + ni
    graph = sp.coo_matrix((np.ones(len(p)), (a, b)), shape=(n, n)).tocsr()
    ncomp, comp = connected_components(graph, directed=False)

    big = np.iinfo(np.int64).max
    min_ir = np.full(ncomp, big, dtype=np.int64)
    min_vis = np.full(ncomp, big, dtype=np.int64)
    np.minimum.at(min_ir, comp[nv:], ir_ids)
    np.minimum.at(min_vis, comp[:nv], vis_ids)
    size = np.bincount(comp, minlength=ncomp)
    kept = np.ones(ncomp, dtype=bool) if keep_unmatched else size > 1
    order = np.lexsort((min_vis, min_ir))
    order = order[kept[order]]
    new = np.full(ncomp, -1, dtype=np.int64)
    new[order] = np.arange(len(order))

    vis_out = np.full(vl.shape, -1, dtype=np.int64)
    ir_out = np.full(il.shape, -1, dtype=np.int64)
    m = vl >= 0
    vis_out[m] = new[comp[np.searchsorted(vis_ids, vl[m])]]
    m = il >= 0
    ir_out[m] = new[comp[nv + np.searchsorted(ir_ids, il[m])]]
    return vis_out, ir_out


def cluster_centroids(
    features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Mean feature of every non-noise cluster (not normalised).

    Args:
        features: ``(N, D)`` float, numpy or torch.
        labels: ``(N,)`` int cluster labels, ``-1`` noise (ignored).

    Returns:
        ``(centroids (C, D), cluster_ids (C,))``: ``cluster_ids`` the sorted distinct
        labels ``>= 0`` (int64), ``centroids[k]`` the mean of the rows labelled
        ``cluster_ids[k]``. Torch in, torch out (same device, float32 for half inputs);
        numpy in, numpy out.
    """
    is_torch = isinstance(features, torch.Tensor)
    x = features.detach() if is_torch else torch.from_numpy(np.ascontiguousarray(np.asarray(features)))
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"features must be floating point, got dtype {x.dtype}")
    y = _as_labels(labels, "labels")
    if len(y) != x.shape[0]:
        raise ValueError(f"labels has {len(y)} entries but features has {x.shape[0]} rows")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    ids, inv = np.unique(y[y >= 0], return_inverse=True)
    idx = torch.from_numpy(inv.astype(np.int64)).to(x.device)
    keep = torch.from_numpy(np.flatnonzero(y >= 0)).to(x.device)
    sums = torch.zeros(len(ids), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, idx, x[keep])
    counts = torch.bincount(idx, minlength=len(ids)).to(x.dtype)
    cent = sums / counts[:, None]
    if is_torch:
        return cent, torch.from_numpy(ids.astype(np.int64)).to(x.device)
    return cent.numpy(), ids.astype(np.int64)
