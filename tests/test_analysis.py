"""Intensity statistics of image views on constructed images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cmamlib.analysis import intensity_statistics
from cmamlib.data import Record


def _images(tmp_path, name, colour, n=4):
    recs = []
    for i in range(n):
        p = tmp_path / f"{name}_{i}.png"
        Image.fromarray(np.full((8, 4, 3), colour, dtype=np.uint8)).save(p)
        recs.append(Record(str(p), i, 1, "visible"))
    return recs


def test_intensity_statistics_known_values(tmp_path):
    red = _images(tmp_path, "red", (200, 0, 0))
    gray = _images(tmp_path, "gray", (60, 60, 60))
    st = intensity_statistics({"red luma": (red, "luma"), "gray": (gray, "luma")}, reference="gray", max_images=10)
    luma = 0.299 * 200
    assert st["red luma"]["mean"] == pytest.approx(luma, abs=0.5)
    assert st["red luma"]["std"] == pytest.approx(0, abs=1e-3)
    assert st["gray"]["mean"] == pytest.approx(60, abs=0.5)
    assert st["gray"]["wasserstein_to_reference"] == 0.0
    assert st["red luma"]["wasserstein_to_reference"] == pytest.approx(round(luma) - 60, abs=1.0)
    # random channel of a pure red image: R (200) or G/B (0), per image
    rc = intensity_statistics({"rc": (red * 5, "random_channel")}, max_images=20, seed=1)["rc"]
    assert set(np.unique(rc["sample"]).tolist()) <= {0, 200}


def test_intensity_statistics_errors(tmp_path):
    gray = _images(tmp_path, "g", (10, 10, 10), n=1)
    with pytest.raises(ValueError, match="no images"):
        intensity_statistics({"empty": ([], "luma")})
    with pytest.raises(ValueError, match="reference"):
        intensity_statistics({"g": (gray, "luma")}, reference="missing")


# --------------------------------------------------------------------------------------
# modality-gap metrics on constructed features with known answers
# --------------------------------------------------------------------------------------

from cmamlib.analysis import (  # noqa: E402
    centroid_gap,
    compare_clusterings,
    cross_modality_nn_accuracy,
    embed_2d,
    linear_probe_modality,
    modality_gap,
    silhouettes,
)


def _identity_features(n_ids=20, per=6, dim=32, offset=0.0, id_scale=1.0, noise=0.05, seed=0):
    """Identity prototypes (random unit directions), ``per`` rows per id and modality,
    plus a shared offset vector added to every infrared row."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(n_ids, dim))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    shift = np.zeros(dim)
    shift[0] = offset
    feats, mods, pids = [], [], []
    for ir in (False, True):
        for p in range(n_ids):
            x = id_scale * protos[p] + noise * rng.normal(size=(per, dim)) + (shift if ir else 0)
            feats.append(x)
            mods += [ir] * per
            pids += [p] * per
    return np.concatenate(feats).astype(np.float32), np.array(mods), np.array(pids)


def _blobs(n=300, dim=16, scale=20.0, seed=0):
    """Two Gaussian blobs (unit covariance), one per modality, centred at ``scale`` times
    two orthogonal unit vectors (far from the origin: L2-normalising keeps them apart)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim))
    i = rng.normal(size=(n, dim))
    v[:, 0] += scale
    i[:, 1] += scale
    return np.concatenate([v, i]), np.array([False] * n + [True] * n), rng.integers(0, 30, 2 * n)


def _loop_centroid_ratio(x, is_ir):
    x = [np.asarray(r, dtype=np.float64) / np.linalg.norm(r) for r in x]
    groups = {m: [r for r, f in zip(x, is_ir) if f == m] for m in (False, True)}
    mus = {m: sum(rs) / len(rs) for m, rs in groups.items()}
    spread = {m: (sum(float(np.sum((r - mus[m]) ** 2)) for r in rs) / len(rs)) ** 0.5 for m, rs in groups.items()}
    return float(np.linalg.norm(mus[False] - mus[True])) / ((spread[False] + spread[True]) / 2)


def _loop_nn_acc(x, is_ir, pids, query_ir):
    x = [np.asarray(r, dtype=np.float64) / np.linalg.norm(r) for r in x]
    gallery = [j for j in range(len(x)) if is_ir[j] != query_ir]
    gallery_ids = {pids[j] for j in gallery}
    hits = total = 0
    for i in range(len(x)):
        if is_ir[i] != query_ir or pids[i] not in gallery_ids:
            continue
        best, best_sim = None, -np.inf
        for j in gallery:
            s = float(np.dot(x[i], x[j]))
            if s > best_sim:
                best, best_sim = j, s
        total += 1
        hits += pids[best] == pids[i]
    return hits / total


def test_centroid_ratio_and_nn_accuracy_match_loop_oracles():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 8)) + np.r_[np.zeros((40, 8)), np.full((30, 8), 0.4)]
    is_ir = np.r_[np.zeros(40, bool), np.ones(30, bool)]
    pids = rng.integers(0, 9, 70)
    pids[is_ir & (pids == 8)] = 7  # id 8 visible only: its queries are left out
    assert centroid_gap(x, is_ir)["centroid_gap_ratio"] == pytest.approx(_loop_centroid_ratio(x, is_ir), rel=1e-9)
    nn = cross_modality_nn_accuracy(x, is_ir, pids, chunk=7)
    assert nn["nn_acc_ir_to_vis"] == pytest.approx(_loop_nn_acc(x, is_ir, pids, True))
    assert nn["nn_acc_vis_to_ir"] == pytest.approx(_loop_nn_acc(x, is_ir, pids, False))
    assert nn["nn_acc_mean"] == pytest.approx((nn["nn_acc_ir_to_vis"] + nn["nn_acc_vis_to_ir"]) / 2)


def test_separated_blobs_large_gap():
    x, m, p = _blobs()
    cg = centroid_gap(x, m)
    assert cg["centroid_gap_ratio"] > 5
    probe = linear_probe_modality(x, m, seed=0)
    assert probe["probe_balanced_accuracy"] > 0.98
    assert probe["probe_accuracy"] > 0.98
    sil = silhouettes(x, m, p)
    assert sil["silhouette_modality"] > 0.6
    assert sil["silhouette_identity"] < 0.1


def test_identical_distributions_no_gap():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 16))
    m = rng.random(1200) < 0.4  # unbalanced: balanced accuracy is still 0.5 at chance
    cg = centroid_gap(x, m)
    assert cg["centroid_gap_ratio"] < 0.1
    assert cg["spread_visible"] == pytest.approx(cg["spread_infrared"], rel=0.05)
    probe = linear_probe_modality(x, m, seed=0)
    assert probe["probe_balanced_accuracy"] == pytest.approx(0.5, abs=0.06)
    assert probe["probe_majority"] == pytest.approx(max(m.mean(), 1 - m.mean()))
    sil = silhouettes(x, m, rng.integers(0, 10, 1200))
    assert abs(sil["silhouette_modality"]) < 0.05


def test_identity_clusters_with_small_offset_nn_perfect():
    x, m, p = _identity_features(offset=0.1)
    nn = cross_modality_nn_accuracy(x, m, p)
    assert nn == {"nn_acc_ir_to_vis": 1.0, "nn_acc_vis_to_ir": 1.0, "nn_acc_mean": 1.0}
    sil = silhouettes(x, m, p)
    assert sil["silhouette_identity"] > 0.8
    assert sil["silhouette_identity"] > sil["silhouette_modality"]
    # a large shared offset dominates: the nearest other-modality row is no longer the same id,
    # the modalities separate and the probe reads them
    xb, mb, pb = _identity_features(offset=5.0, id_scale=0.3, noise=0.3)
    big = modality_gap(xb, mb, pb)
    small = modality_gap(x, m, p)
    assert big["nn_acc_mean"] < 0.5
    assert big["centroid_gap_ratio"] > small["centroid_gap_ratio"]
    assert big["probe_balanced_accuracy"] > 0.95
    assert big["silhouette_modality"] > big["silhouette_identity"]


def test_modality_gap_keys_strings_and_subsampled_silhouette():
    x, m, p = _identity_features(offset=0.5, seed=2)
    names = np.where(m, "infrared", "visible")
    a = modality_gap(x, m, p, seed=0)
    b = modality_gap(x, names, p, seed=0)
    assert a == b
    for k in (
        "centroid_gap_ratio",
        "nn_acc_ir_to_vis",
        "nn_acc_vis_to_ir",
        "nn_acc_mean",
        "probe_balanced_accuracy",
        "silhouette_modality",
        "silhouette_identity",
    ):
        assert k in a and np.isfinite(a[k])
    assert a["n"] == len(x) and a["n_ids"] == 20 and a["n_visible"] == a["n_infrared"] == 120
    sub = silhouettes(x, m, p, max_samples=100, seed=0)
    assert sub["silhouette_rows"] == 100
    assert sub == silhouettes(x, m, p, max_samples=100, seed=0)


def test_gap_metric_errors():
    x, m, p = _identity_features(n_ids=3, per=2)
    with pytest.raises(ValueError, match="modality has 5 entries"):
        centroid_gap(x, m[:5])
    with pytest.raises(ValueError, match="single modality"):
        modality_gap(x, np.zeros(len(x), bool), p)
    with pytest.raises(ValueError, match="pids has"):
        cross_modality_nn_accuracy(x, m, p[:-1])
    with pytest.raises(ValueError, match="'visible' / 'infrared'"):
        centroid_gap(x, np.where(m, "ir", "visible"))
    with pytest.raises(ValueError, match="no identity occurs in both"):
        cross_modality_nn_accuracy(x, m, np.where(m, 100 + p, p))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        centroid_gap(x[0], m[:1])


def test_embed_2d_seeded_and_cached(tmp_path):
    import time

    x, m, p = _identity_features(n_ids=8, per=5)
    for method in ("tsne", "umap"):
        t0 = time.time()
        e1 = embed_2d(x, method, seed=0, cache_dir=tmp_path)
        first = time.time() - t0
        files = list(tmp_path.glob(f"{method}_*.npz"))
        assert len(files) == 1 and e1.shape == (len(x), 2) and e1.dtype == np.float32
        mtime = files[0].stat().st_mtime_ns
        t0 = time.time()
        e2 = embed_2d(x, method, seed=0, cache_dir=tmp_path)
        assert time.time() - t0 < first
        np.testing.assert_array_equal(e1, e2)
        assert files[0].stat().st_mtime_ns == mtime  # read, not rewritten
        # the cache is really what is returned
        np.savez(files[0], embedding=np.zeros_like(e1))
        assert (embed_2d(x, method, seed=0, cache_dir=tmp_path) == 0).all()
    # other params or other features: another key
    embed_2d(x, "tsne", seed=0, cache_dir=tmp_path, perplexity=5.0)
    embed_2d(x[:-1], "tsne", seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("tsne_*.npz"))) == 3
    # seeded: same result without a cache
    np.testing.assert_allclose(embed_2d(x, "tsne", seed=1), embed_2d(x, "tsne", seed=1))
    with pytest.raises(ValueError, match="method"):
        embed_2d(x, "pca")


def test_compare_clusterings_identity_blobs():
    x, m, p = _identity_features(n_ids=10, per=5, offset=0.05, noise=0.02)
    res = compare_clusterings(x, p, modality=m, k1=12, k2=4, eps=0.6, min_samples=3, min_cluster_size=6)
    assert set(res) == {"dbscan", "hdbscan"}
    for name in ("dbscan", "hdbscan"):
        q = res[name]
        assert q["clusters"] == 10
        assert q["ari"] == pytest.approx(1.0) and q["nmi"] == pytest.approx(1.0)
        assert q["noise_fraction"] == 0.0
        assert q["cross_modal_clusters"] == 1.0
    # a modality offset larger than the identity spread: clusters split by modality
    xb, mb, pb = _identity_features(n_ids=10, per=5, offset=3.0, id_scale=0.2, noise=0.02)
    split = compare_clusterings(xb, pb, modality=mb, k1=12, k2=4, eps=0.6, min_samples=3, min_cluster_size=6)
    assert split["dbscan"]["cross_modal_clusters"] < 0.5


def test_compare_clusterings_refuses_per_modality_pairs():
    x, m, p = _identity_features(n_ids=4, per=4, offset=0.05, noise=0.02)
    with pytest.raises(ValueError, match=r"eps=\(0.5, 0.4\).*one value.*dbscan_params"):
        compare_clusterings(x, p, modality=m, k1=6, k2=3, eps=(0.5, 0.4), min_samples=2)
    with pytest.raises(ValueError, match=r"min_samples=\[2, 3\]"):
        compare_clusterings(x, p, k1=6, k2=3, eps=0.5, min_samples=[2, 3])
