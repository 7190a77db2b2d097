"""DBSCAN and HDBSCAN on a precomputed (Jaccard) distance."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

# --------------------------------------------------------------------------------------
# clustering on precomputed distances
# --------------------------------------------------------------------------------------


def _check_dist(dist: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(dist):
        d = sp.csr_matrix(dist)
        vals = d.data
    else:
        d = np.asarray(dist)
        vals = d
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dist must be a square (N, N) distance matrix, got shape {d.shape}")
    if d.shape[0] == 0:
        raise ValueError("dist is empty (0 x 0)")
    if np.isnan(vals).any():
        raise ValueError("dist contains NaN values")
    if (vals < 0).any():
        raise ValueError(f"dist contains negative values (min {vals.min()})")
    return d


def cluster_dbscan(
    dist: np.ndarray | sp.spmatrix,
    eps: float = 0.6,
    min_samples: int = 4,
    n_jobs: int | None = None,
) -> np.ndarray:
    """DBSCAN on precomputed distances (sklearn), as cluster-contrast clusters.

    Args:
        dist: (N, N) dense array, or a sparse matrix whose missing entries mean
            "farther than eps" (as returned by :func:`jaccard_distance_sparse`;
            stored zeros are distance 0).
        eps: neighbourhood radius (cluster-contrast 0.6; the CMAM stage-2 default is 0.4).
        min_samples: core-point neighbourhood size, the point itself included.
        n_jobs: sklearn parallelism.

    Returns:
        (N,) int64 labels 0..K-1, -1 for noise; deterministic for a given matrix.
    """
    from sklearn.cluster import DBSCAN

    d = _check_dist(dist)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if sp.issparse(d):
        if eps >= 1.0:
            raise ValueError(f"eps={eps} >= 1 on a sparse Jaccard matrix: entries of 1 are not stored")
        from sklearn.neighbors import sort_graph_by_row_values

        d = sort_graph_by_row_values(d.astype(np.float64), copy=True, warn_when_not_sorted=False)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=n_jobs).fit_predict(d)
    return labels.astype(np.int64)


def cluster_hdbscan(
    dist: np.ndarray | sp.spmatrix,
    min_cluster_size: int = 4,
    min_samples: int | None = None,
    cluster_selection_epsilon: float = 0.0,
    cluster_selection_method: str = "eom",
) -> np.ndarray:
    """HDBSCAN (McInnes et al., the ``hdbscan`` package) on precomputed distances.

    Args:
        dist: (N, N) dense array, or a sparse matrix whose missing entries are
            distance 1 (:func:`jaccard_distance_sparse`). Sparse input is clustered
            per connected component with hdbscan's sparse path (``max_dist=1``);
            components smaller than ``min_cluster_size`` are noise. Points of
            different components are at distance 1, the largest Jaccard distance,
            so this differs from the dense run only in how the hierarchy joins
            components at that distance.
        min_cluster_size, min_samples, cluster_selection_epsilon,
        cluster_selection_method: as ``hdbscan.HDBSCAN``.

    Returns:
        (N,) int64 labels 0..K-1 numbered by first occurrence, -1 for noise;
        deterministic.
    """
    import hdbscan

    d = _check_dist(dist)
    kw = dict(
        min_cluster_size=int(min_cluster_size),
        min_samples=None if min_samples is None else int(min_samples),
        cluster_selection_epsilon=float(cluster_selection_epsilon),
        cluster_selection_method=cluster_selection_method,
        metric="precomputed",
    )
    n = d.shape[0]
    if not sp.issparse(d):
        labels = hdbscan.HDBSCAN(**kw).fit_predict(np.asarray(d, dtype=np.float64))
        return _renumber(labels)
    from scipy.sparse.csgraph import connected_components

    g = d.astype(np.float64).tocsr()
    g.data[g.data == 0] = 1e-12  # stored zeros are edges; keep them through tolil()
    g = g.maximum(g.T).tocsr()
    ncomp, comp = connected_components(g, directed=False)
    labels = np.full(n, -1, dtype=np.int64)
    next_label = 0
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        if len(members) < max(2, min_cluster_size):
            continue
        sub = g[members][:, members]
        sub_labels = hdbscan.HDBSCAN(**kw, max_dist=1.0).fit_predict(sub)
        ok = sub_labels >= 0
        labels[members[ok]] = sub_labels[ok] + next_label
        if ok.any():
            next_label += int(sub_labels.max()) + 1
    return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 0..K-1 in order of first occurrence; -1 kept."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    valid = labels >= 0
    if valid.any():
        _, first, inv = np.unique(labels[valid], return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        out[valid] = rank[inv]
    return out
