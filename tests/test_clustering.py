"""k-reciprocal Jaccard distance vs a plain-loop oracle; DBSCAN / HDBSCAN wrappers.

``oracle_jaccard`` follows the definition step by step, one sample at a time (the
structure of cluster-contrast's ``compute_jaccard_distance``); it is also what
``benchmarks/bench_jaccard.py`` times.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cmamlib.clustering as clustering_module
from cmamlib.clustering import (
    cluster_dbscan,
    cluster_hdbscan,
    jaccard_distance,
    jaccard_distance_sparse,
    knn_self_first,
)

HAVE_NUMBA = clustering_module.numba is not None

# ---------------------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------------------


def oracle_initial_rank(x: np.ndarray, k: int) -> np.ndarray:
    """Exact kNN by Euclidean distance (float64), self first, ties by index."""
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, -np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def oracle_jaccard(features, k1=30, k2=6, initial_rank=None):
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if initial_rank is None:
        initial_rank = oracle_initial_rank(x, k1)  # k1 columns, as the reference searches k1

    def k_reciprocal(i, k):
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    half = int(np.around(k1 / 2))
    r_full = [k_reciprocal(i, k1) for i in range(n)]
    r_half = [k_reciprocal(i, half) for i in range(n)]

    v = np.zeros((n, n))
    for i in range(n):
        expansion = r_full[i]
        for c in r_full[i]:
            cand = r_half[c]
            if len(np.intersect1d(cand, r_full[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        dist = 2 - 2 * x[i] @ x[expansion].T
        w = np.exp(-dist - (-dist).max())
        v[i, expansion] = w / w.sum()

    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(0) for i in range(n)])

    inv_index = [np.where(v[:, k] != 0)[0] for k in range(n)]
    jac = np.zeros((n, n))
    for i in range(n):
        temp_min = np.zeros(n)
        for k in np.where(v[i] != 0)[0]:
            others = inv_index[k]
            temp_min[others] += np.minimum(v[i, k], v[others, k])
        jac[i] = 1 - temp_min / (2 - temp_min)
    jac[jac < 0] = 0
    return jac.astype(np.float32)


def clustered_features(n, dim=32, num_ids=None, noise=0.6, seed=0):
    """L2-normalised features around random identity centres (re-ID-like structure)."""
    rng = np.random.default_rng(seed)
    num_ids = num_ids or max(2, n // 12)
    centres = rng.normal(size=(num_ids, dim))
    ids = rng.integers(0, num_ids, n)
    x = centres[ids] + noise * rng.normal(size=(n, dim)) * np.sqrt(1 + rng.random((n, 1)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), ids


# ---------------------------------------------------------------------------------------
# Jaccard
# ---------------------------------------------------------------------------------------


NUMBA = [True, False] if HAVE_NUMBA else [False]


@pytest.mark.parametrize("use_numba", NUMBA)
@pytest.mark.parametrize("n,k1,k2,seed", [(160, 20, 6, 0), (200, 30, 6, 1), (90, 7, 1, 2), (120, 5, 9, 3)])
def test_jaccard_matches_oracle(n, k1, k2, seed, use_numba):
    x, _ = clustered_features(n, seed=seed)
    ref = oracle_jaccard(x, k1, k2)
    fast = jaccard_distance(torch.from_numpy(x), k1, k2, use_numba=use_numba)
    assert fast.dtype == np.float32 and fast.shape == (n, n)
    close = np.abs(fast - ref) <= 1e-4
    assert close.mean() >= 0.999, f"{(~close).sum()} entries differ"
    # without kNN ties the two agree everywhere; feed the oracle's ranking to be sure
    assert close.all()
    np.testing.assert_allclose(np.diag(fast), 0, atol=1e-6)


def test_jaccard_numpy_input_and_knn_self_first():
    x, _ = clustered_features(80, seed=4)
    a = jaccard_distance(x, 10, 3)
    b = jaccard_distance(torch.from_numpy(x), 10, 3)
    np.testing.assert_array_equal(a, b)
    idx = knn_self_first(x, 10, chunk_size=7)
    np.testing.assert_array_equal(idx, oracle_initial_rank(x, 10))


def test_jaccard_with_duplicates_differs_only_at_ties():
    x, _ = clustered_features(120, seed=5)
    x[60:70] = x[50:60]  # exact duplicates: kNN ties
    ref = oracle_jaccard(x, 15, 4)
    fast = jaccard_distance(x, 15, 4)
    assert (np.abs(fast - ref) <= 1e-4).mean() >= 0.95
    assert np.all((fast >= 0) & (fast <= 1))
    np.testing.assert_allclose(np.diag(fast), 0, atol=1e-6)


@pytest.mark.parametrize("use_numba", NUMBA)
@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_equals_dense(seed, use_numba):
    x, _ = clustered_features(300, seed=seed)
    dense = jaccard_distance(x, 20, 6, use_numba=use_numba)
    # tiny blocks to exercise the block boundaries
    sparse = jaccard_distance_sparse(x, 20, 6, max_contrib=5000, max_block_cells=300 * 7, use_numba=use_numba)
    assert sp.isspmatrix_csr(sparse) and sparse.dtype == np.float32
    back = np.ones_like(dense)
    coo = sparse.tocoo()
    back[coo.row, coo.col] = coo.data
    np.testing.assert_allclose(back, dense, atol=1e-6)
    assert sparse.nnz == int((dense < 1).sum())  # exactly the entries below 1 are stored
    assert (sparse.diagonal() == 0).all() and sparse.getnnz(axis=1).min() >= 1  # zeros stored


def test_jaccard_bad_input():
    x, _ = clustered_features(20, seed=0)
    with pytest.raises(ValueError, match="k1=20"):
        jaccard_distance(x, k1=20)
    with pytest.raises(ValueError, match="k1=25"):
        jaccard_distance_sparse(x, k1=25)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaccard_distance(bad, k1=5)
    with pytest.raises(ValueError, match="k2"):
        jaccard_distance(x, k1=5, k2=0)
    with pytest.raises(ValueError, match="2-D"):
        jaccard_distance(x[0], k1=5)


# ---------------------------------------------------------------------------------------
# DBSCAN / HDBSCAN
# ---------------------------------------------------------------------------------------


def test_dbscan_dense_and_sparse_agree():
    x, ids = clustered_features(400, num_ids=25, noise=0.4, seed=6)
    dense = jaccard_distance(x, 20, 6)
    sparse = jaccard_distance_sparse(x, 20, 6)
    a = cluster_dbscan(dense, eps=0.6, min_samples=4)
    b = cluster_dbscan(sparse, eps=0.6, min_samples=4)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and a.min() >= -1 and a.max() >= 5
    np.testing.assert_array_equal(a, cluster_dbscan(dense, eps=0.6, min_samples=4))  # deterministic
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(ids[a >= 0], a[a >= 0]) > 0.8
    with pytest.raises(ValueError, match="eps"):
        cluster_dbscan(sparse, eps=1.0)
    with pytest.raises(ValueError, match="square"):
        cluster_dbscan(dense[:, :-1])


def test_dbscan_noise_and_tiny_inputs():
    d = np.array([[0.0, 0.1, 0.9], [0.1, 0.0, 0.9], [0.9, 0.9, 0.0]])
    np.testing.assert_array_equal(cluster_dbscan(d, eps=0.2, min_samples=2), [0, 0, -1])
    with pytest.raises(ValueError, match="NaN"):
        cluster_dbscan(np.full((2, 2), np.nan))


def test_hdbscan_dense_and_sparse():
    x, ids = clustered_features(300, num_ids=15, noise=0.4, seed=7)
    dense = jaccard_distance(x, 20, 6)
    a = cluster_hdbscan(dense, min_cluster_size=4)
    assert a.dtype == np.int64 and a.max() >= 3
    np.testing.assert_array_equal(a, cluster_hdbscan(dense, min_cluster_size=4))
    b = cluster_hdbscan(jaccard_distance_sparse(x, 20, 6), min_cluster_size=4)
    from sklearn.metrics import adjusted_rand_score

    both = (a >= 0) & (b >= 0)
    assert adjusted_rand_score(a[both], b[both]) > 0.9
    assert adjusted_rand_score(ids[a >= 0], a[a >= 0]) > 0.7


def test_label_quality_against_loop():
    from cmamlib.clustering import label_quality

    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, 80)
    lab = np.where(rng.random(80) < 0.2, -1, (true + (rng.random(80) < 0.2)) % 7)
    q = label_quality(lab, true)
    keep = lab >= 0
    # purity, the obvious way
    hits = 0
    for c in set(lab[keep].tolist()):
        members = true[lab == c]
        hits += max((members == t).sum() for t in set(members.tolist()))
    assert q["purity"] == pytest.approx(hits / keep.sum())
    assert q["clusters"] == len(set(lab[keep].tolist()))
    assert q["noise_fraction"] == pytest.approx(1 - keep.mean())
    perfect = label_quality(true, true)
    assert perfect["ari"] == pytest.approx(1) and perfect["nmi"] == pytest.approx(1) and perfect["purity"] == 1


def test_cluster_majority_against_loop():
    from cmamlib.clustering import cluster_majority

    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 120)
    lab = np.where(rng.random(120) < 0.2, -1, (true + (rng.random(120) < 0.3)) % 6)
    got = cluster_majority(lab, true)
    want = {}
    for c in sorted(set(lab[lab >= 0].tolist())):  # the obvious way: count every identity in the cluster
        members = [int(t) for t, lb in zip(true, lab) if lb == c]
        counts = {t: members.count(t) for t in sorted(set(members))}
        top = max(counts.values())
        major = min(t for t, n in counts.items() if n == top)
        want[c] = (major, top, len(members))
    assert got == want
    assert cluster_majority(np.array([0, 0, 1, 1]), np.array([7, 3, 5, 5])) == {
        0: (3, 1, 2),
        1: (5, 2, 2),
    }  # tie -> smallest id
    assert cluster_majority(np.array([-1, -1]), np.array([1, 2])) == {}


def test_pseudo_labels_finds_separated_blobs():
    from cmamlib.clustering import pseudo_labels

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    x = np.repeat(centres, 12, axis=0) + 0.05 * rng.normal(size=(60, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lab = pseudo_labels(x.astype(np.float32), k1=10, k2=4, eps=0.6, min_samples=4)
    true = np.repeat(np.arange(5), 12)
    assert len(set(lab.tolist()) - {-1}) == 5
    for c in range(5):
        assert len(set(lab[true == c].tolist())) == 1
    # tiny sets: k1 is reduced instead of failing
    assert pseudo_labels(x[:8].astype(np.float32), k1=30).shape == (8,)


def test_camera_centre_against_a_loop():
    """camera_centre (and its standardise option) against the obvious per-row loop."""
    from cmamlib.clustering import camera_centre

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32) + 3.0
    cams = rng.integers(0, 3, size=30)
    for standardise in (False, True):
        want = np.zeros_like(x)
        for i in range(len(x)):
            same = x[cams == cams[i]]
            row = x[i] - same.mean(0)
            if standardise:
                row = row / (same.std(0, ddof=1) + 1e-6)
            want[i] = row / np.linalg.norm(row)
        np.testing.assert_allclose(camera_centre(x, cams, standardise=standardise).numpy(), want, atol=1e-5)
