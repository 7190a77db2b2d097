"""Ranking metrics vs a plain-loop oracle written from docs/protocols.md.

The oracle (``oracle_eval``) is also what ``benchmarks/bench_evaluation.py`` times.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from cmamlib.data.records import DatasetError, Record
from cmamlib.evaluation import (
    EvalResult,
    eval_llcm,
    eval_market,
    eval_regdb,
    eval_sysu,
    evaluate_llcm,
    evaluate_regdb,
    evaluate_sysu,
    pairwise_distance,
    sample_gallery_indices,
    sysu_gallery_indices,
)

# ---------------------------------------------------------------------------------------
# oracle: one query at a time, the protocol text written out
# ---------------------------------------------------------------------------------------


def oracle_eval(distmat, q_pids, g_pids, q_camids=None, g_camids=None, max_rank=20, protocol="sysu"):
    """Plain loop: rank by np.argsort, drop the protocol's gallery entries, then
    CMC (distinct identities for sysu/llcm, first positive for regdb), AP, INP."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    cmc = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(num_q):
        kept = []
        for j in indices[i]:
            if protocol == "sysu" and q_camids[i] == 3 and g_camids[j] == 2:
                continue
            if protocol in ("llcm", "market") and g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue
            kept.append(j)
        hit_ranks = [r for r, j in enumerate(kept) if g_pids[j] == q_pids[i]]
        if not hit_ranks:
            continue  # invalid query: counts in neither numerator nor denominator
        if protocol in ("sysu", "llcm"):
            distinct, seen = [], set()
            for j in kept:
                if g_pids[j] not in seen:
                    seen.add(g_pids[j])
                    distinct.append(g_pids[j])
            first = distinct.index(q_pids[i])
        else:
            first = hit_ranks[0]
        for r in range(max_rank):
            if r >= first:
                cmc[r] += 1
        precisions = [(k + 1) / (rank + 1) for k, rank in enumerate(hit_ranks)]
        aps.append(sum(precisions) / len(hit_ranks))
        inps.append(len(hit_ranks) / (hit_ranks[-1] + 1))
    if not aps:
        raise ValueError("no valid query")
    return cmc / len(aps), float(np.mean(aps)), float(np.mean(inps))


def make_case(num_q, num_g, num_ids, seed, protocol="sysu", ties=False, extra_query_ids=3):
    """Random identities/cameras; queries of a few identities have no gallery positive."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, num_ids, num_g)
    q_pids = rng.integers(0, num_ids + extra_query_ids, num_q)  # ids >= num_ids: no positive
    if protocol == "sysu":
        q_cams = rng.choice([3, 6], num_q)
        g_cams = rng.choice([1, 2, 4, 5], num_g)
    else:
        q_cams = rng.integers(1, 4, num_q)
        g_cams = rng.integers(1, 4, num_g)
    # identity structure so that rankings are not random noise
    base = rng.normal(size=(num_ids + extra_query_ids, 8))
    q = base[q_pids] + 0.8 * rng.normal(size=(num_q, 8))
    g = base[g_pids] + 0.8 * rng.normal(size=(num_g, 8))
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    if ties:
        dist = np.round(dist)  # many exact ties
    return dist, q_pids, g_pids, q_cams, g_cams


def _assert_close(fast, ref, tol=1e-6):
    cmc, m, n = fast
    rcmc, rm, rn = ref
    assert cmc.shape == rcmc.shape
    np.testing.assert_allclose(cmc, rcmc, atol=tol, rtol=0)
    assert abs(m - rm) <= tol and abs(n - rn) <= tol
    assert np.all((cmc >= 0) & (cmc <= 1)) and 0 <= m <= 1 and 0 <= n <= 1


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_eval_sysu_matches_oracle(seed, ties):
    dist, qp, gp, qc, gc = make_case(60, 45, 12, seed, "sysu", ties)
    _assert_close(eval_sysu(dist, qp, gp, qc, gc), oracle_eval(dist, qp, gp, qc, gc, protocol="sysu"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_eval_llcm_matches_oracle(seed, ties):
    dist, qp, gp, qc, gc = make_case(50, 40, 10, seed, "llcm", ties)
    _assert_close(eval_llcm(dist, qp, gp, qc, gc), oracle_eval(dist, qp, gp, qc, gc, protocol="llcm"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_eval_regdb_matches_oracle(seed, ties):
    dist, qp, gp, _, _ = make_case(50, 60, 10, seed, "regdb", ties)
    _assert_close(eval_regdb(dist, qp, gp), oracle_eval(dist, qp, gp, protocol="regdb"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_eval_market_matches_oracle(seed, ties):
    dist, qp, gp, qc, gc = make_case(50, 60, 10, seed, "market", ties)
    _assert_close(eval_market(dist, qp, gp, qc, gc), oracle_eval(dist, qp, gp, qc, gc, protocol="market"))


@pytest.mark.parametrize("seed", range(3))
def test_mixed_tied_and_untied_rows(seed):
    # only some rows have exact ties (those take the argsort fallback), a few tie
    # a positive with a negative at the very first rank
    dist, qp, gp, qc, gc = make_case(80, 50, 9, seed, "sysu")
    rng = np.random.default_rng(seed)
    rows = rng.choice(80, 25, replace=False)
    dist[rows] = np.round(dist[rows] * 2) / 2
    dist[rows[:5], :] = 1.0  # whole row tied
    for fn, proto in [(eval_sysu, "sysu"), (eval_llcm, "llcm")]:
        _assert_close(fn(dist, qp, gp, qc, gc), oracle_eval(dist, qp, gp, qc, gc, protocol=proto))
    _assert_close(eval_regdb(dist, qp, gp, max_rank=10), oracle_eval(dist, qp, gp, max_rank=10, protocol="regdb"))
    d32 = dist.astype(np.float32)  # float32 input ranks like its float64 copy
    _assert_close(eval_sysu(d32, qp, gp, qc, gc), oracle_eval(d32, qp, gp, qc, gc, protocol="sysu"))


def test_small_gallery_and_few_distinct_ids():
    # 6 gallery entries (< max_rank): cmc has length 6; SYSU kept lists hold at most
    # 3 distinct ids, so the distinct-id curve is padded with its last value.
    dist, qp, gp, qc, gc = make_case(30, 6, 3, 7, "sysu", extra_query_ids=0)
    for fn, proto in [(eval_sysu, "sysu"), (eval_llcm, "llcm")]:
        fast = fn(dist, qp, gp, qc, gc, max_rank=20)
        assert fast[0].shape == (6,)
        _assert_close(fast, oracle_eval(dist, qp, gp, qc, gc, max_rank=20, protocol=proto))
    fast = eval_regdb(dist, qp, gp, max_rank=4)
    assert fast[0].shape == (4,)
    _assert_close(fast, oracle_eval(dist, qp, gp, max_rank=4, protocol="regdb"))


def test_hand_computed_example():
    # one query (id 7, cam 3); ranked gallery: [id 1 cam 2, id 7 cam 2, id 7 cam 1, id 2 cam 4, id 7 cam 5]
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids = np.array([1, 7, 7, 2, 7])
    g_cams = np.array([2, 2, 1, 4, 5])
    cmc, mAP, mINP = eval_sysu(dist, np.array([7]), g_pids, np.array([3]), g_cams, max_rank=4)
    # cam-2 entries dropped -> kept [7(c1), 2, 7(c5)]: positives at ranks 1 and 3
    assert cmc.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert mAP == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert mINP == pytest.approx(2 / 3)
    # RegDB: nothing dropped -> positives at 2, 3, 5
    cmc, mAP, mINP = eval_regdb(dist, np.array([7]), g_pids, max_rank=3)
    assert cmc.tolist() == [0.0, 1.0, 1.0]
    assert mAP == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert mINP == pytest.approx(3 / 5)
    # a cam-6 query keeps everything; distinct ids ranked [1, 7, 2]
    cmc, _, _ = eval_sysu(dist, np.array([7]), g_pids, np.array([6]), g_cams, max_rank=3)
    assert cmc.tolist() == [0.0, 1.0, 1.0]


def test_invalid_queries_do_not_count():
    dist, qp, gp, qc, gc = make_case(40, 30, 8, 3, "sysu", extra_query_ids=0)
    qp2 = np.concatenate([qp, [1000, 1001]])  # two extra queries without positives
    qc2 = np.concatenate([qc, [3, 6]])
    dist2 = np.concatenate([dist, np.random.default_rng(0).random((2, dist.shape[1]))])
    a, b = eval_sysu(dist, qp, gp, qc, gc), eval_sysu(dist2, qp2, gp, qc2, gc)
    _assert_close(a, b, tol=1e-12)


def test_bad_inputs_raise():
    dist, qp, gp, qc, gc = make_case(10, 8, 4, 0, "sysu")
    with pytest.raises(ValueError, match="q_pids"):
        eval_sysu(dist, qp[:-1], gp, qc, gc)
    with pytest.raises(ValueError, match="g_camids"):
        eval_sysu(dist, qp, gp, qc, gc[:-1])
    with pytest.raises(ValueError, match="g_pids"):
        eval_regdb(dist, qp, gp[:3])
    bad = dist.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        eval_regdb(bad, qp, gp)
    with pytest.raises(ValueError, match="empty gallery"):
        eval_sysu(np.zeros((3, 0)), qp[:3], gp[:0], qc[:3], gc[:0])
    with pytest.raises(ValueError, match="no valid query"):
        eval_regdb(dist, qp + 100, gp)
    with pytest.raises(ValueError, match="max_rank"):
        eval_regdb(dist, qp, gp, max_rank=0)


# ---------------------------------------------------------------------------------------
# galleries and feature-level helpers
# ---------------------------------------------------------------------------------------


def sysu_like_records(num_ids=6, seed=0, root="/data/SYSU-MM01"):
    """Visible candidates (cams 1, 2, 4, 5) and infrared queries (cams 3, 6); some
    identity/camera folders missing, file lists shuffled (order must not matter)."""
    rng = random.Random(seed)
    vis, ir = [], []
    for pid in range(1, num_ids + 1):
        for cam in (1, 2, 3, 4, 5, 6):
            if rng.random() < 0.2:
                continue
            n = rng.randint(1, 12)
            recs = [
                Record(f"{root}/cam{cam}/{pid:04d}/{k:04d}.jpg", pid, cam, "infrared" if cam in (3, 6) else "visible")
                for k in range(1, n + 1)
            ]
            (ir if cam in (3, 6) else vis).extend(recs)
    rng.shuffle(vis)
    return vis, ir


def protocol_gallery(records, cams, trial):
    """The protocol text: seed, ids sorted, each camera folder, random.choice of sorted files."""
    random.seed(trial)
    out = []
    for pid in sorted({r.pid for r in records}):
        for cam in cams:
            files = sorted(r.path for r in records if r.pid == pid and r.camid == cam)
            if files:
                out.append(random.choice(files))
    return out


@pytest.mark.parametrize("mode,cams", [("all", (1, 2, 4, 5)), ("indoor", (1, 2))])
def test_sysu_gallery_indices_follow_protocol(mode, cams):
    vis, _ = sysu_like_records(seed=1)
    for trial in range(3):
        state = random.getstate()
        idx = sysu_gallery_indices(vis, mode=mode, trial=trial)
        assert random.getstate() == state  # global RNG untouched
        assert [vis[i].path for i in idx] == protocol_gallery(vis, cams, trial)
    multi = sysu_gallery_indices(vis, mode=mode, trial=0, shot=10)
    assert len(set(multi)) == len(multi) and len(multi) >= len(sysu_gallery_indices(vis, mode=mode, trial=0))
    with pytest.raises(ValueError, match="mode"):
        sysu_gallery_indices(vis, mode="outdoor")


def _features_for(records, seed, dim=16, noise=0.9):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(123).normal(size=(100, dim))
    return np.stack([base[r.pid] + noise * rng.normal(size=dim) for r in records]).astype(np.float32)


def test_evaluate_sysu_end_to_end():
    vis, ir = sysu_like_records(num_ids=8, seed=2)
    gf, qf = _features_for(vis, 0), _features_for(ir, 1)
    out = evaluate_sysu(qf, ir, gf, vis, trials=3)
    assert set(out) == {"all", "indoor"}
    q_pids = np.array([r.pid for r in ir])
    q_cams = np.array([r.camid for r in ir])
    for mode in ("all", "indoor"):
        res = out[mode]
        assert res.num_trials == 3
        for t in range(3):
            idx = sysu_gallery_indices(vis, mode=mode, trial=t)
            qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
            gn = gf[idx] / np.linalg.norm(gf[idx], axis=1, keepdims=True)
            dist = -(qn.astype(np.float64) @ gn.astype(np.float64).T)
            ref = oracle_eval(
                dist,
                q_pids,
                np.array([vis[i].pid for i in idx]),
                q_cams,
                np.array([vis[i].camid for i in idx]),
                protocol="sysu",
            )
            np.testing.assert_allclose(res.cmc[t], ref[0], atol=1e-6)
            assert abs(res.mAP[t] - ref[1]) < 1e-6 and abs(res.mINP[t] - ref[2]) < 1e-6
        d = res.to_dict()
        json.dumps(d)
        assert set(d["mean"]) == {"R1", "R5", "R10", "R20", "mAP", "mINP"}
        assert all(0 <= v <= 1 for v in d["mean"].values())
        assert d["mean"]["mAP"] == pytest.approx(np.mean(res.mAP))
        assert d["std"]["mAP"] == pytest.approx(np.std(res.mAP))


def test_evaluate_regdb_and_llcm():
    splits_v, splits_t, rv, rt = [], [], [], []
    for s in range(2):
        vr = [Record(f"/r/Visible/{p}/{k}.bmp", p, 1, "visible") for p in range(10) for k in range(3)]
        tr = [Record(f"/r/Thermal/{p}/{k}.bmp", p, 2, "infrared") for p in range(10) for k in range(3)]
        splits_v.append(torch.from_numpy(_features_for(vr, 10 + s)))
        splits_t.append(_features_for(tr, 20 + s))
        rv.append(vr)
        rt.append(tr)
    out = evaluate_regdb(splits_v, rv, splits_t, rt)
    assert set(out) == {"visible_to_thermal", "thermal_to_visible"}
    for s in range(2):
        d = pairwise_distance(splits_v[s], splits_t[s])
        vp = np.array([r.pid for r in rv[s]])
        tp = np.array([r.pid for r in rt[s]])
        ref = oracle_eval(d, vp, tp, protocol="regdb")
        np.testing.assert_allclose(out["visible_to_thermal"].cmc[s], ref[0], atol=1e-6)
        ref = oracle_eval(d.T.copy(), tp, vp, protocol="regdb")
        assert abs(out["thermal_to_visible"].mAP[s] - ref[1]) < 1e-6
    json.dumps({k: v.to_dict() for k, v in out.items()})

    # LLCM: gallery of one image per id and camera, seeded
    vis = [
        Record(f"/l/vis/cam{c}/{p:04d}/{k}.jpg", p, c, "visible") for p in range(6) for c in (1, 2, 4) for k in range(4)
    ]
    nir = [
        Record(f"/l/nir/cam{c}/{p:04d}/{k}.jpg", p, c, "infrared") for p in range(6) for c in (1, 2) for k in range(3)
    ]
    res = evaluate_llcm(_features_for(nir, 3), nir, _features_for(vis, 4), vis, trials=2)
    assert res.protocol == "llcm/infrared_to_visible" and res.num_trials == 2
    idx = sample_gallery_indices(vis, (1, 2, 4), trial=1)
    assert len(idx) == 6 * 3
    assert [vis[i].path for i in idx] == protocol_gallery(vis, (1, 2, 4), 1)


def test_helpers_reject_bad_input():
    vis, ir = sysu_like_records(num_ids=4, seed=3)
    gf, qf = _features_for(vis, 0), _features_for(ir, 1)
    with pytest.raises(ValueError, match="records"):
        evaluate_sysu(qf[:-1], ir, gf, vis, trials=1)
    bad = qf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sysu(bad, ir, gf, vis, trials=1)
    with pytest.raises(ValueError, match="dimensions"):
        pairwise_distance(qf, gf[:, :5])


def test_pairwise_distance_metrics_rank_identically():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    a = pairwise_distance(q, g, metric="neg_dot", chunk_size=3)
    b = pairwise_distance(q, g, metric="euclidean", chunk_size=2)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(a, -qn @ gn.T, atol=1e-12)
    np.testing.assert_allclose(b**2, 2 + 2 * a, atol=1e-9)
    assert (np.argsort(a, 1) == np.argsort(b, 1)).all()


def test_eval_result_short_curve():
    r = EvalResult("x")
    r.add_trial(np.array([0.5, 1.0]), 0.7, 0.6)
    assert r.rank(20) == [1.0] and r.mean["R1"] == 0.5


# ---------------------------------------------------------------------------------------
# SYSU-MM01, the dataset authors' own protocol (docs/protocols.md, second mode)
# ---------------------------------------------------------------------------------------


def official_oracle(root, feature_of, mode, shot, trials, normalize):
    """Plain loop written from the protocol text: read the .mat files with scipy as the
    authors' Python evaluation does, gallery of trial t = first ``shot`` (1-based)
    indices of each (camera, test id) permutation row t, over the sorted file list;
    queries = every image of the test ids in cams 3 and 6; Euclidean distance
    (scipy cdist); drop gallery entries at the query's camera location; CMC on unique
    ids over valid queries, AP (and INP) on the kept list; mean over trials."""
    import os

    from scipy.io import loadmat
    from scipy.spatial.distance import cdist

    perms = loadmat(os.path.join(root, "exp", "rand_perm_cam.mat"))["rand_perm_cam"]
    test_ids = loadmat(os.path.join(root, "exp", "test_id.mat"))["id"].squeeze().reshape(-1)
    location = [1, 2, 2, 4, 5, 6]
    gallery_cams = {"all": [1, 2, 4, 5], "indoor": [1, 2]}[mode]

    def files(cam, pid):
        folder = os.path.join(root, f"cam{cam}", "%04d" % pid)
        return [os.path.join(folder, f) for f in sorted(os.listdir(folder))] if os.path.isdir(folder) else []

    def feat(path):
        f = np.asarray(feature_of[path], dtype=np.float64)
        return f / np.linalg.norm(f) if normalize else f

    xq, yq, cq = [], [], []
    for cam in (3, 6):
        for pid in test_ids:
            for path in files(cam, int(pid)):
                xq.append(feat(path)), yq.append(int(pid)), cq.append(location[cam - 1])
    cmcs, aps_t, inps_t = [], [], []
    for t in range(trials):
        xg, yg, cg = [], [], []
        for cam in gallery_cams:
            per_id = perms[cam - 1][0].squeeze()
            for pid in test_ids:
                p = np.asarray(per_id[int(pid) - 1])
                if p.size == 0:
                    continue
                fs = files(cam, int(pid))
                for j in p[t][:shot]:
                    xg.append(feat(fs[int(j) - 1])), yg.append(int(pid)), cg.append(location[cam - 1])
        dist = cdist(np.array(xq), np.array(xg))
        cmc = np.zeros(len(set(yg)))
        aps, inps = [], []
        for i in range(len(xq)):
            order = np.argsort(dist[i])
            kept = [yg[j] for j in order if cg[j] != cq[i]]
            if yq[i] not in kept:
                continue
            unique = []
            for y in kept:
                if y not in unique:
                    unique.append(y)
            cmc[unique.index(yq[i]) :] += 1
            hits = [r for r, y in enumerate(kept) if y == yq[i]]
            aps.append(np.mean([(k + 1) / (r + 1) for k, r in enumerate(hits)]))
            inps.append(len(hits) / (hits[-1] + 1))
        cmcs.append(cmc / len(aps))
        aps_t.append(np.mean(aps))
        inps_t.append(np.mean(inps))
    return cmcs, aps_t, inps_t


@pytest.fixture(scope="module")
def sysu_official_tree(tiny_data):
    from cmamlib.data.readers import sysu_query_gallery

    root = tiny_data / "SYSU-MM01-synth"
    query, gallery = sysu_query_gallery(root, "all")
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1000, 12))
    feature_of = {r.path: base[r.pid] + 1.1 * rng.normal(size=12) for r in query + gallery}
    return root, query, gallery, feature_of


@pytest.mark.parametrize("mode,shot,normalize", [("all", 1, True), ("indoor", 1, False), ("all", 10, False)])
def test_official_protocol_matches_loop_oracle(sysu_official_tree, mode, shot, normalize):
    from cmamlib.data.readers import sysu_query_gallery

    root, _, _, feature_of = sysu_official_tree
    query, gallery = sysu_query_gallery(root, mode)
    qf = np.stack([feature_of[r.path] for r in query])
    gf = np.stack([feature_of[r.path] for r in gallery])
    out = evaluate_sysu(
        qf, query, gf, gallery, modes=(mode,), trials=10, shot=shot, normalize=normalize, protocol="official"
    )
    res = out[mode]
    assert res.protocol == f"sysu-official/{mode}" and res.info["protocol"] == "official"
    cmcs, aps, inps = official_oracle(str(root), feature_of, mode, shot, 10, normalize)
    for t in range(10):
        n = min(len(res.cmc[t]), len(cmcs[t]))
        np.testing.assert_allclose(res.cmc[t][:n], cmcs[t][:n], atol=1e-6, rtol=0)
        assert abs(res.mAP[t] - aps[t]) < 1e-6 and abs(res.mINP[t] - inps[t]) < 1e-6
    assert 0 < res.r1 < 1  # a non-trivial case
    # the default protocol is the baseline one, and says so
    base = evaluate_sysu(qf, query, gf, gallery, modes=(mode,), trials=2, shot=shot)[mode]
    assert base.protocol == f"sysu/{mode}" and base.info["protocol"] == "baseline"


def _write_official(root, perms, test_ids):
    """rand_perm_cam.mat / test_id.mat written here with scipy (independently of the
    generator): perms {(cam, pid): (trials, n) 1-based}; inner cells 1 x N."""
    from scipy.io import savemat

    n_ids = max(pid for _, pid in perms)
    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        inner = np.empty((1, n_ids), dtype=object)
        for pid in range(1, n_ids + 1):
            inner[0, pid - 1] = np.asarray(perms.get((cam, pid), np.zeros((0, 0))), dtype=np.float64)
        cells[cam - 1, 0] = inner
    (root / "exp").mkdir(parents=True, exist_ok=True)
    savemat(root / "exp" / "rand_perm_cam.mat", {"rand_perm_cam": cells})
    savemat(root / "exp" / "test_id.mat", {"id": np.asarray([test_ids], dtype=np.float64)})


def test_official_gallery_follows_the_permutations(tmp_path):
    from cmamlib.data.readers import read_sysu_mm01_official
    from cmamlib.evaluation import sysu_official_gallery_indices

    root = tmp_path / "SYSU-MM01"
    recs = [
        Record(str(root / f"cam{c}" / f"{p:04d}" / f"{k:04d}.jpg"), p, c, "visible")
        for p in (2, 5)
        for c in (1, 2, 4)
        for k in range(1, 4)
    ]
    perms = {(c, p): np.array([[3, 1, 2], [2, 3, 1]]) for p in (2, 5) for c in (1, 2, 4)}
    perms[(4, 5)] = np.array([[1, 2, 3], [3, 2, 1]])
    perms[(3, 2)] = np.array([[1], [1]])  # one infrared image: a trials x 1 column
    _write_official(root, perms, [5, 2])
    split = read_sysu_mm01_official(root)
    assert split.test_ids == (5, 2) and split.num_trials == 2
    shuffled = list(reversed(recs))
    idx = sysu_official_gallery_indices(shuffled, split, "all", trial=0)
    # camera-major, ids in test_id.mat order, file (first index of row 0) 1-based
    assert [(shuffled[i].camid, shuffled[i].pid, shuffled[i].path[-8:]) for i in idx] == [
        (1, 5, "0003.jpg"),
        (1, 2, "0003.jpg"),
        (2, 5, "0003.jpg"),
        (2, 2, "0003.jpg"),
        (4, 5, "0001.jpg"),
        (4, 2, "0003.jpg"),
    ]
    idx = sysu_official_gallery_indices(shuffled, split, "indoor", trial=1, shot=2)
    assert [shuffled[i].path[-8:] for i in idx] == ["0002.jpg", "0003.jpg"] * 4
    # tree and file disagree: named
    with pytest.raises(DatasetError, match=r"rand_perm_cam\{1\}\{2\} permutes 3 images.*hold 2 images of id 2 in cam1"):
        sysu_official_gallery_indices(
            [r for r in recs if r.path[-8:] != "0001.jpg" or r.camid != 1 or r.pid != 2], split, "all", 0
        )
    with pytest.raises(ValueError, match="trial=2"):
        sysu_official_gallery_indices(recs, split, "all", trial=2)


def test_official_protocol_errors(tmp_path, sysu_official_tree):
    import shutil

    from cmamlib.data.readers import read_sysu_mm01_official, sysu_query_gallery
    from cmamlib.data.records import DatasetError

    src, _, _, _ = sysu_official_tree
    root = tmp_path / "SYSU-MM01"
    shutil.copytree(src, root)
    query, gallery = sysu_query_gallery(root)
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(len(query), 8)), rng.normal(size=(len(gallery), 8))
    (root / "exp" / "rand_perm_cam.mat").unlink()
    with pytest.raises(DatasetError, match=r"rand_perm_cam\.mat.*found nothing.*protocol='baseline'"):
        evaluate_sysu(qf, query, gf, gallery, protocol="official")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_sysu(qf, query, gf, gallery, protocol="matlab")
    evaluate_sysu(qf, query, gf, gallery, trials=1)  # the baseline needs no .mat
    (root / "exp" / "rand_perm_cam.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="rand_perm_cam.mat: expected a MATLAB .mat file"):
        read_sysu_mm01_official(root)
    _write_official(root, {(1, 1): np.array([[1, 1]])}, [1])
    with pytest.raises(DatasetError, match=r"row 1: expected a permutation of 1\.\.2"):
        read_sysu_mm01_official(root)


def test_evaluate_sysu_mm02_both_directions():
    from cmamlib.evaluation import evaluate_sysu_mm02

    vis = [Record(f"/m/test/rgb/{p}_{k}.jpg", p, 0, "visible") for p in range(6) for k in range(3)]
    ir = [Record(f"/m/test/ir/{p}_{k}.jpg", p, 1 + k % 2, "infrared") for p in range(6) for k in range(3)]
    vf, inf = _features_for(vis, 3), _features_for(ir, 4)
    out = evaluate_sysu_mm02(vf, vis, inf, ir)
    assert list(out) == ["visible_to_infrared", "infrared_to_visible"]
    dist = pairwise_distance(vf, inf)
    vp, ip = np.array([r.pid for r in vis]), np.array([r.pid for r in ir])
    ref = oracle_eval(dist, vp, ip, protocol="regdb")
    np.testing.assert_allclose(out["visible_to_infrared"].cmc[0], ref[0], atol=1e-9)
    ref = oracle_eval(dist.T, ip, vp, protocol="regdb")
    assert out["infrared_to_visible"].mAP[0] == pytest.approx(ref[1], abs=1e-9)
    assert out["infrared_to_visible"].protocol == "sysu-mm02/infrared_to_visible"
