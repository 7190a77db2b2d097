"""Bipartite cross-modality labeling vs brute-force and plain-loop oracles.

``hungarian_oracle`` is the textbook O(n^2 m) Hungarian algorithm with potentials,
written from its definition and checked against brute force over all injective
assignments; ``match_oracle`` rebuilds :func:`match_clusters` with loops on top of it
(it is also what ``benchmarks/bench_matching.py`` times). ``unify_oracle`` is a
union-find written the obvious way.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from cmamlib.labeling import cluster_centroids, match_clusters, unify_labels

COSTS = ("sqeuclidean", "cosine", "inv_exp_cos")

# ---------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------


def _unit(row) -> list[float]:
    n = math.sqrt(sum(float(t) ** 2 for t in row))
    return [float(t) / n for t in row]


def cost_oracle(vis, ir, cost) -> np.ndarray:
    """Cost matrix (Cv, Ci), one pair at a time from the definitions."""
    vn = [np.array(_unit(r)) for r in vis]
    rn = [np.array(_unit(r)) for r in ir]
    out = np.zeros((len(vn), len(rn)))
    for i, a in enumerate(vn):
        for j, b in enumerate(rn):
            cos = float(np.dot(a, b))
            if cost == "sqeuclidean":
                out[i, j] = float(((a - b) ** 2).sum())
            elif cost == "cosine":
                out[i, j] = 1.0 - cos
            else:
                out[i, j] = 1.0 / math.exp(cos)
    return out


def brute_force_assignment(c: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """Minimal total cost over all injective maps of the smaller side into the larger."""
    n, m = c.shape
    best, best_pairs = math.inf, []
    if n <= m:
        for perm in itertools.permutations(range(m), n):
            t = sum(c[i, perm[i]] for i in range(n))
            if t < best - 1e-12:
                best, best_pairs = t, [(i, perm[i]) for i in range(n)]
    else:
        for perm in itertools.permutations(range(n), m):
            t = sum(c[perm[j], j] for j in range(m))
            if t < best - 1e-12:
                best, best_pairs = t, [(perm[j], j) for j in range(m)]
    return best, sorted(best_pairs)


def hungarian_oracle(c: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """Hungarian algorithm with row/column potentials (Kuhn-Munkres, shortest
    augmenting paths), rectangular: matches every row of the smaller side."""
    c = np.asarray(c, dtype=np.float64)
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=np.int64)  # column j (1-based) -> row (1-based), 0 free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            # reduced costs of the free columns (one step of the textbook inner loop,
            # over all columns j at once)
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    pairs = [(int(match[j]) - 1, j - 1) for j in range(1, m + 1) if match[j]]
    if transposed:
        pairs = [(b, a) for a, b in pairs]
    pairs.sort()
    total = sum(float(np.asarray(c.T if transposed else c)[a, b]) for a, b in pairs)
    return total, pairs


def match_oracle(vis, ir, cost="sqeuclidean", unequal="ward_merge", solver=hungarian_oracle):
    """``match_clusters`` from loops: returns (pairs sorted, total cost)."""
    vis, ir = np.asarray(vis, dtype=np.float64), np.asarray(ir, dtype=np.float64)
    c = cost_oracle(vis, ir, cost)
    nv, ni = c.shape
    if unequal == "drop" or nv == ni:
        total, pairs = solver(c)
        return sorted(pairs), total
    if unequal == "second_round":
        vis_larger = nv > ni
        big = list(range(nv if vis_larger else ni))
        pairs, total = [], 0.0
        while big:
            sub = np.array([c[b] if vis_larger else c[:, b] for b in big])
            t, sp = solver(sub)
            total += t
            done = set()
            for a, s in sp:
                pairs.append((big[a], s) if vis_larger else (s, big[a]))
                done.add(big[a])
            big = [b for b in big if b not in done]
        return sorted(pairs), total
    # ward_merge: the same Ward tree / cut as the library, then loops
    vis_larger = nv > ni
    big = vis if vis_larger else ir
    small = ir if vis_larger else vis
    k = len(small)
    bign = np.array([_unit(r) for r in big])
    g = fcluster(linkage(bign, method="ward"), t=k, criterion="maxclust")
    assert len(set(g.tolist())) == k, "oracle only for tie-free inputs"
    gids = sorted(set(g.tolist()))
    merged = []
    for gid in gids:
        members = [bign[i] for i in range(len(bign)) if g[i] == gid]
        merged.append(_unit(sum(members) / len(members)))
    cm = cost_oracle(merged, small, cost)  # (groups, small)
    total, gp = solver(cm)
    partner = {gids[a]: s for a, s in gp}
    pairs = []
    for i in range(len(big)):
        s = partner[g[i]]
        pairs.append((i, s) if vis_larger else (s, i))
    return sorted(pairs), total


def unify_oracle(vis_labels, ir_labels, pairs, keep_unmatched=True):
    parent = {}

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for y in vis_labels:
        if y >= 0:
            parent[("v", int(y))] = ("v", int(y))
    for y in ir_labels:
        if y >= 0:
            parent[("i", int(y))] = ("i", int(y))
    matched = set()
    for a, b in pairs:
        ra, rb = find(("v", int(a))), find(("i", int(b)))
        parent[ra] = rb
        matched.update([("v", int(a)), ("i", int(b))])
    comps = {}
    for node in parent:
        comps.setdefault(find(node), []).append(node)
    keys = []
    for root, nodes in comps.items():
        if not keep_unmatched and not any(nd in matched for nd in nodes):
            continue
        irs = [x for s, x in nodes if s == "i"]
        viss = [x for s, x in nodes if s == "v"]
        keys.append((min(irs) if irs else math.inf, min(viss) if viss else math.inf, root))
    keys.sort()
    new = {root: k for k, (_, _, root) in enumerate(keys)}
    vo = [new.get(find(("v", int(y))), -1) if y >= 0 else -1 for y in vis_labels]
    io = [new.get(find(("i", int(y))), -1) if y >= 0 else -1 for y in ir_labels]
    return vo, io


def _centroids(rng, n, d=6):
    return rng.normal(size=(n, d))


# ---------------------------------------------------------------------------------------
# the oracles themselves
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 4), (5, 5), (7, 7), (2, 6)])
def test_hungarian_oracle_vs_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    c = rng.random(shape)
    assert hungarian_oracle(c)[0] == pytest.approx(brute_force_assignment(c)[0], abs=1e-12)
    assert hungarian_oracle(c)[1] == brute_force_assignment(c)[1]


# ---------------------------------------------------------------------------------------
# match_clusters
# ---------------------------------------------------------------------------------------

SHAPES = [(1, 1), (3, 5), (6, 4), (4, 4), (7, 7), (5, 2), (2, 7)]


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_drop_is_optimal_rectangular_matching(shape, cost):
    rng = np.random.default_rng(10 * shape[0] + shape[1])
    vis, ir = _centroids(rng, shape[0]), _centroids(rng, shape[1])
    res = match_clusters(vis, ir, cost=cost, unequal="drop")
    best, best_pairs = brute_force_assignment(cost_oracle(vis, ir, cost))
    assert res.cost == pytest.approx(best, abs=1e-9)
    assert res.pairs.tolist() == [list(p) for p in best_pairs]
    assert res.pairs.dtype == np.int64 and res.pairs.shape == (min(shape), 2)
    assert len(res.unmatched_vis) == shape[0] - min(shape)
    assert len(res.unmatched_ir) == shape[1] - min(shape)
    assert sorted(res.unmatched_vis.tolist() + res.pairs[:, 0].tolist()) == list(range(shape[0]))
    cos = cost_oracle(vis, ir, "cosine")
    np.testing.assert_allclose(res.similarity, [1 - cos[a, b] for a, b in res.pairs], atol=1e-12)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_ward_merge_vs_loop_oracle(shape, cost):
    rng = np.random.default_rng(100 + 10 * shape[0] + shape[1])
    vis, ir = _centroids(rng, shape[0]), _centroids(rng, shape[1])
    res = match_clusters(vis, ir, cost=cost)  # ward_merge default
    pairs, total = match_oracle(vis, ir, cost, "ward_merge", solver=brute_force_assignment)
    assert res.pairs.tolist() == [list(p) for p in pairs]
    assert res.cost == pytest.approx(total, abs=1e-9)
    # every cluster of both sides paired; the smaller side one-to-many
    assert sorted(set(res.pairs[:, 0].tolist())) == list(range(shape[0]))
    assert sorted(set(res.pairs[:, 1].tolist())) == list(range(shape[1]))
    assert res.num_pairs == max(shape)
    assert len(res.unmatched_vis) == len(res.unmatched_ir) == 0


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_second_round_vs_loop_oracle(shape, cost):
    rng = np.random.default_rng(200 + 10 * shape[0] + shape[1])
    vis, ir = _centroids(rng, shape[0]), _centroids(rng, shape[1])
    res = match_clusters(vis, ir, cost=cost, unequal="second_round")
    pairs, total = match_oracle(vis, ir, cost, "second_round", solver=brute_force_assignment)
    assert res.pairs.tolist() == [list(p) for p in pairs]
    assert res.cost == pytest.approx(total, abs=1e-9)
    assert sorted(set(res.pairs[:, 0].tolist())) == list(range(shape[0]))
    assert sorted(set(res.pairs[:, 1].tolist())) == list(range(shape[1]))
    big = 0 if shape[0] >= shape[1] else 1
    assert sorted(res.pairs[:, big].tolist()) == list(range(max(shape)))  # larger side once each


def test_equal_counts_same_for_every_mode():
    rng = np.random.default_rng(3)
    vis, ir = _centroids(rng, 6), _centroids(rng, 6)
    got = [match_clusters(vis, ir, unequal=u).pairs.tolist() for u in ("ward_merge", "second_round", "drop")]
    assert got[0] == got[1] == got[2]


def test_torch_float16_input_and_scale_invariance():
    rng = np.random.default_rng(4)
    vis, ir = _centroids(rng, 5), _centroids(rng, 3)
    a = match_clusters(vis, ir)
    b = match_clusters(torch.tensor(vis * 7.0, dtype=torch.float32), torch.tensor(ir, dtype=torch.float16))
    assert a.pairs.tolist() == b.pairs.tolist()


def test_larger_sizes_match_hungarian_oracle():
    rng = np.random.default_rng(5)
    vis, ir = _centroids(rng, 40, 16), _centroids(rng, 33, 16)
    for unequal in ("ward_merge", "second_round", "drop"):
        res = match_clusters(vis, ir, unequal=unequal)
        pairs, total = match_oracle(vis, ir, "sqeuclidean", unequal)
        assert res.pairs.tolist() == [list(p) for p in pairs], unequal
        assert res.cost == pytest.approx(total, abs=1e-9)


def test_one_side_empty():
    rng = np.random.default_rng(6)
    for nv, ni in [(0, 4), (3, 0), (0, 0)]:
        for unequal in ("ward_merge", "second_round", "drop"):
            res = match_clusters(
                np.zeros((nv, 5)) if nv == 0 else rng.normal(size=(nv, 5)),
                np.zeros((ni, 5)) if ni == 0 else rng.normal(size=(ni, 5)),
                unequal=unequal,
            )
            assert res.pairs.shape == (0, 2) and res.similarity.shape == (0,)
            assert res.unmatched_vis.tolist() == list(range(nv))
            assert res.unmatched_ir.tolist() == list(range(ni))
            assert res.cost == 0.0


def _assert_valid_ward(res, nv, ni):
    assert sorted(set(res.pairs[:, 0].tolist())) == list(range(nv))
    assert sorted(set(res.pairs[:, 1].tolist())) == list(range(ni))
    big = 0 if nv > ni else 1
    assert sorted(res.pairs[:, big].tolist()) == list(range(max(nv, ni)))  # each big cluster once


def test_identical_centroids_ties_still_valid():
    # ties in the Ward tree: fcluster(maxclust=4) gives only 3 groups here
    x = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    z = linkage(x, method="ward")
    assert len(set(fcluster(z, 4, criterion="maxclust").tolist())) == 3  # the case we handle
    ir = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=float)
    for vis_, ir_ in ((x, ir), (ir, x)):
        for unequal in ("ward_merge", "second_round", "drop"):
            res = match_clusters(vis_, ir_, unequal=unequal)
            nv, ni = len(vis_), len(ir_)
            if unequal == "drop":
                assert res.num_pairs == min(nv, ni)
                assert len(set(res.pairs[:, 0].tolist())) == len(set(res.pairs[:, 1].tolist())) == res.num_pairs
            else:
                _assert_valid_ward(res, nv, ni)
            assert np.isfinite(res.cost)
    # all centroids identical: any perfect matching is optimal
    same = np.ones((4, 3))
    res = match_clusters(same, np.ones((4, 3)))
    assert sorted(res.pairs[:, 1].tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(res.similarity, 1.0)
    res = match_clusters(np.ones((6, 3)), np.ones((2, 3)))
    _assert_valid_ward(res, 6, 2)


def test_threshold_rejects_low_similarity_pairs():
    vis = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    ir = np.array([[1.0, 0.1, 0], [0.1, 1.0, 0], [1.0, 1.0, 0.3]])
    full = match_clusters(vis, ir, unequal="drop")
    assert full.pairs.tolist() == [[0, 0], [1, 1], [2, 2]]
    res = match_clusters(vis, ir, unequal="drop", threshold=0.5)
    assert res.pairs.tolist() == [[0, 0], [1, 1]]
    assert res.unmatched_vis.tolist() == [2] and res.unmatched_ir.tolist() == [2]
    assert (res.similarity >= 0.5).all()
    assert res.cost == pytest.approx(full.cost)
    # many-to-one (ward_merge, second_round): exactly the pairs below the threshold go
    vis5 = np.vstack([vis, [[0.9, 0.1, 0.0], [0.2, 0.2, 1.0]]])
    for unequal in ("ward_merge", "second_round"):
        full = match_clusters(vis5, ir, unequal=unequal)
        r = match_clusters(vis5, ir, unequal=unequal, threshold=0.5)
        keep = full.similarity >= 0.5
        assert 0 < keep.sum() < full.num_pairs
        assert r.pairs.tolist() == full.pairs[keep].tolist()
        np.testing.assert_allclose(r.similarity, full.similarity[keep])
        assert r.unmatched_vis.tolist() == sorted(set(range(5)) - set(r.pairs[:, 0].tolist()))
        assert r.unmatched_ir.tolist() == sorted(set(range(3)) - set(r.pairs[:, 1].tolist()))


def test_errors_name_the_problem():
    good = np.ones((3, 4))
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/inf.*rows \\[1\\]"):
        match_clusters(bad, good)
    with pytest.raises(ValueError, match="inf"):
        match_clusters(good, np.full((2, 4), np.inf))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 5\).*feature sizes"):
        match_clusters(good, np.ones((2, 5)))
    with pytest.raises(ValueError, match="2-D"):
        match_clusters(np.ones(4), good)
    with pytest.raises(ValueError, match=r"zero-norm rows \[0, 1\]"):
        match_clusters(np.zeros((2, 4)), good)
    with pytest.raises(ValueError, match="cost 'l1'"):
        match_clusters(good, good, cost="l1")
    with pytest.raises(ValueError, match="unequal 'pad'"):
        match_clusters(good, good, unequal="pad")


# ---------------------------------------------------------------------------------------
# unify_labels, cluster_centroids
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_unmatched", [True, False])
def test_unify_labels_vs_oracle(keep_unmatched):
    rng = np.random.default_rng(7)
    vis = rng.integers(-1, 6, size=40)  # clusters 0..5, noise -1
    ir = rng.integers(-1, 5, size=30) * 2  # clusters 0, 2, ..., 8 (non-contiguous)
    ir[ir < 0] = -1  # noise
    cases = [
        [(0, 2), (1, 4), (3, 0)],  # one-to-one, some unmatched both sides
        [(0, 2), (1, 2), (2, 2), (3, 8)],  # many visible -> one infrared
        [(0, 0), (0, 2), (5, 4), (4, 4), (4, 6)],  # chains: one component over several
        [],
    ]
    for pairs in cases:
        got = unify_labels(vis, ir, np.array(pairs, dtype=np.int64).reshape(-1, 2), keep_unmatched)
        want = unify_oracle(vis.tolist(), ir.tolist(), pairs, keep_unmatched)
        assert got[0].tolist() == want[0], pairs
        assert got[1].tolist() == want[1], pairs
        used = sorted(set(got[0].tolist() + got[1].tolist()) - {-1})
        assert used == list(range(len(used)))  # 0..L-1
        assert (got[0][vis < 0] == -1).all() and (got[1][ir < 0] == -1).all()


def test_unify_labels_perfect_matching_renames_visible_to_infrared():
    vis = np.array([0, 1, 2, -1, 2])
    ir = np.array([0, 1, 2, 2, -1])
    v, i = unify_labels(vis, ir, np.array([[0, 2], [1, 0], [2, 1]]))
    assert i.tolist() == [0, 1, 2, 2, -1]
    assert v.tolist() == [2, 0, 1, -1, 1]


def test_unify_labels_with_match_result_end_to_end():
    rng = np.random.default_rng(8)
    ids = rng.normal(size=(5, 8))
    vl = np.repeat(np.arange(5), 4)
    il = np.repeat(np.arange(4), 4)  # identity 4 has no infrared cluster
    vf = ids[vl] + 0.05 * rng.normal(size=(len(vl), 8))
    irf = ids[il] + 0.05 * rng.normal(size=(len(il), 8))
    vc, vids = cluster_centroids(vf, vl)
    ic, iids = cluster_centroids(irf, il)
    res = match_clusters(vc, ic, unequal="drop")
    assert res.pairs.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    v, i = unify_labels(vl, il, np.stack([vids[res.pairs[:, 0]], iids[res.pairs[:, 1]]], 1))
    assert v.tolist() == vl.tolist() and i.tolist() == il.tolist()
    v, _ = unify_labels(vl, il, res.pairs, keep_unmatched=False)
    assert (v[vl == 4] == -1).all()


def test_unify_labels_errors():
    with pytest.raises(ValueError, match="visible cluster ids \\[7\\]"):
        unify_labels(np.array([0, 1]), np.array([0]), np.array([[7, 0]]))
    with pytest.raises(ValueError, match="infrared cluster ids \\[3\\]"):
        unify_labels(np.array([0, 1]), np.array([0]), np.array([[1, 3]]))
    with pytest.raises(ValueError, match="below -1"):
        unify_labels(np.array([0, -2]), np.array([0]), np.zeros((0, 2), dtype=int))
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        unify_labels(np.array([0]), np.array([0]), np.array([0, 0, 0]))


def test_cluster_centroids_vs_loop():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    y = rng.integers(-1, 4, size=30) * 3
    y[y < 0] = -1
    cent, ids = cluster_centroids(x, y)
    assert ids.tolist() == sorted(set(y.tolist()) - {-1})
    for k, c in enumerate(ids):
        np.testing.assert_allclose(cent[k], x[y == c].mean(0), atol=1e-6)
    ct, idt = cluster_centroids(torch.from_numpy(x).half(), torch.from_numpy(y))
    assert isinstance(ct, torch.Tensor) and ct.dtype == torch.float32 and idt.tolist() == ids.tolist()
    np.testing.assert_allclose(ct.numpy(), cent, atol=1e-2)
    with pytest.raises(ValueError, match="29 entries.*30 rows"):
        cluster_centroids(x, y[:29])
