"""Pseudo-label clustering: k-reciprocal Jaccard distance + DBSCAN / HDBSCAN.

The Jaccard distance is the k-reciprocal encoding of Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding" (CVPR 2017), in the form used for
clustering by cluster-contrast re-ID (Dai et al., "Cluster Contrast for Unsupervised
Person Re-Identification", ACCV 2022; ``compute_jaccard_distance`` in
``clustercontrast/utils/faiss_rerank.py``), which the CMAM authors' code calls with
``k1=30, k2=6`` before DBSCAN. For every sample i:

1. ``N(i, k)``: the k nearest neighbours by Euclidean distance, i itself first (the
   reference searches ``k1`` neighbours, so both the k1 set and its backward check use
   ``k1`` entries including i, and the half sets ``round(k1 / 2) + 1``).
2. k-reciprocal set ``R(i) = {j in N(i, k1) : i in N(j, k1)}``; the same with the half
   size gives ``R_half(c)``.
3. Expansion: ``E(i) = R(i) U R_half(c)`` for every ``c in R(i)`` with
   ``|R_half(c) & R(i)| > 2/3 |R_half(c)|``.
4. ``V[i, j] = softmax_j(-(2 - 2 x_i . x_j))`` over ``j in E(i)``, 0 elsewhere.
5. Query expansion: ``V[i] <- mean of V[j]`` over the first ``k2`` neighbours of i.
6. ``d(i, j) = 1 - S / (2 - S)``, ``S = sum_k min(V[i, k], V[j, k])``; negatives set
   to 0 (rows of V sum to 1, so ``2 - S`` is the sum of the maxima: a weighted
   Jaccard distance).

The reference builds two dense N x N arrays and loops in Python. Here every step is
vectorised on sparse structures (scipy CSR, torch for the products): the kNN search is
an exact chunked torch top-k (faiss optional), steps 2-5 are sparse matrix algebra,
step 6 accumulates ``min`` over the shared support of V in row blocks. The dense
:func:`jaccard_distance` returns the N x N array; :func:`jaccard_distance_sparse`
keeps only the entries below 1 (pairs with overlapping supports) in bounded memory.
Results equal the loop definition up to float32 rounding, except where exact kNN ties
are broken in another order.

Layout: :mod:`.knn` (input checks, kNN), :mod:`.jaccard` (the distance), :mod:`.dbscan`
(DBSCAN / HDBSCAN) and :mod:`.labels` (pseudo labels, camera centring, label quality);
every name is importable from ``cmamlib.clustering``.
"""

from __future__ import annotations

from .dbscan import (  # noqa: F401
    _check_dist,
    _renumber,
    cluster_dbscan,
    cluster_hdbscan,
)
from .jaccard import (  # noqa: F401
    _concat_freeing,
    _encoding,
    _expanded_sets,
    _min_overlap_blocks_numpy,
    _mmap_large_allocations,
    _nb_emit,
    _nb_jaccard_dense,
    _nb_overlap_touch,
    _nb_pair_dots,
    _neighbour_graph,
    _overlap_plan,
    _pattern_dots,
    _reciprocal,
    _to_distance,
    _use_numba,
    _zero_diagonal,
    jaccard_distance,
    jaccard_distance_sparse,
    numba,  # noqa: F401  (None when not installed)
)
from .knn import (  # noqa: F401
    _as_features,
    _check_k,
    _force_self_first,
    _knn,
    _knn_torch,
    knn_self_first,
)
from .labels import (  # noqa: F401
    camera_centre,
    cluster_majority,
    label_quality,
    pseudo_labels,
)

__all__ = [
    "camera_centre",
    "cluster_dbscan",
    "cluster_hdbscan",
    "jaccard_distance",
    "jaccard_distance_sparse",
    "knn_self_first",
    "label_quality",
    "pseudo_labels",
]
