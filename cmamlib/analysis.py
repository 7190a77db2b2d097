"""Analysis helpers for the notebooks.

- intensity statistics of image views (notebook 01);
- modality-gap metrics of a feature set with modality and identity labels: centroid gap
  ratio, cross-modality nearest-neighbour identity accuracy, linear-probe modality
  accuracy, silhouettes by modality and by identity (:func:`modality_gap`);
- cached, seeded 2-D embeddings (UMAP / t-SNE, :func:`embed_2d`) and a DBSCAN vs HDBSCAN
  comparison on the same distances (:func:`compare_clusterings`) (notebook 04).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .data.records import Record
from .data.transforms import gray_view, pil_to_uint8, to_float


def _view_pixels(
    records: Sequence[Record], mode: str, rng: np.random.Generator, max_images: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pick = rng.choice(len(records), min(max_images, len(records)), replace=False)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    pix, means, stds = [], [], []
    for i in sorted(pick):
        with Image.open(records[i].path) as im:
            x = to_float(pil_to_uint8(im.convert("RGB"))[None])
        g = gray_view(x, mode, gen)[0, 0].numpy() * 255.0
        pix.append(g.ravel())
        means.append(g.mean())
        stds.append(g.std())
    return np.concatenate(pix), np.array(means), np.array(stds)


def intensity_statistics(
    groups: dict[str, tuple[Sequence[Record], str]],
    reference: str | None = None,
    max_images: int = 300,
    seed: int = 0,
    sample_size: int = 200_000,
) -> dict[str, dict]:
    """Intensity statistics of gray views of image groups.

    Args:
        groups: ``name -> (records, gray_mode)``; each image is turned into its gray view
            (:func:`cmamlib.data.transforms.gray_view`, ``"luma"`` or
            ``"random_channel"``; an infrared image is gray already, so any mode returns
            it unchanged up to rounding).
        reference: the group the others are compared with (1-D Wasserstein distance of
            the pixel intensity distributions, in gray levels 0-255).
        max_images: images drawn per group (seeded).
        sample_size: pixels kept per group in the returned ``sample`` (for histograms).

    Returns:
        ``name -> {mean, std, image_mean_std, image_contrast_mean, wasserstein_to_reference,
        sample}``: mean and std of all pixels, the spread of per-image mean brightness, the
        mean per-image contrast (std), the distance to the reference (0 for itself), and a
        pixel sample (uint8 array).
    """
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)
    pix = {}
    out: dict[str, dict] = {}
    for name, (records, mode) in groups.items():
        if not records:
            raise ValueError(f"intensity_statistics: group {name!r} has no images")
        p, m, s = _view_pixels(records, mode, rng, max_images)
        pix[name] = p
        keep = rng.choice(len(p), min(sample_size, len(p)), replace=False)
        out[name] = {
            "mean": float(p.mean()),
            "std": float(p.std()),
            "image_mean_std": float(m.std()),
            "image_contrast_mean": float(s.mean()),
            "sample": np.clip(np.round(p[keep]), 0, 255).astype(np.uint8),
        }
    if reference is not None:
        if reference not in pix:
            raise ValueError(f"reference {reference!r} is not one of the groups {list(groups)}")
        ref = out[reference]["sample"].astype(np.float64)
        for name in out:
            out[name]["wasserstein_to_reference"] = float(
                wasserstein_distance(out[name]["sample"].astype(np.float64), ref)
            )
    return out


# --------------------------------------------------------------------------------------
# modality gap (notebook 04)
# --------------------------------------------------------------------------------------

_MODALITY_NAMES = {"visible": False, "infrared": True}


def _modality_mask(modality, n: int) -> np.ndarray:
    """(N,) bool, True = infrared, from a bool array or an array of ``"visible"`` /
    ``"infrared"`` strings; checks the length and that both modalities occur."""
    m = np.asarray(modality).reshape(-1)
    if len(m) != n:
        raise ValueError(f"modality has {len(m)} entries for {n} features")
    if m.dtype == bool:
        is_ir = m
    elif m.dtype.kind in ("U", "S", "O"):
        bad = sorted({str(v) for v in m} - set(_MODALITY_NAMES))
        if bad:
            raise ValueError(f"modality values {bad[:5]} are not 'visible' / 'infrared'")
        is_ir = np.array([_MODALITY_NAMES[str(v)] for v in m], dtype=bool)
    else:
        raise ValueError(
            f"modality must be a bool array (True = infrared) or 'visible'/'infrared' strings, got dtype {m.dtype}"
        )
    if is_ir.all() or not is_ir.any():
        raise ValueError(f"modality has a single modality ({int(is_ir.sum())} infrared of {n}); need both")
    return is_ir


def _features(features, normalise: bool = True) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf values")
    if normalise:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        if (norm == 0).any():
            raise ValueError(f"features has {int((norm == 0).sum())} all-zero rows: cannot L2-normalise")
        x = x / norm
    return x


def _ids(pids, n: int) -> np.ndarray:
    p = np.asarray(pids).reshape(-1)
    if len(p) != n:
        raise ValueError(f"pids has {len(p)} entries for {n} features")
    return p


def centroid_gap(features: np.ndarray | torch.Tensor, modality: np.ndarray) -> dict[str, float]:
    """Distance between the modality centroids relative to the within-modality spread.

    Rows are L2-normalised first. With ``mu_v`` / ``mu_i`` the means of the visible /
    infrared rows and ``s_m = sqrt(mean_{x in m} ||x - mu_m||^2)`` the RMS distance of a
    modality's rows to their centroid::

        centroid_gap_ratio = ||mu_v - mu_i|| / ((s_v + s_i) / 2)

    0 when both modalities share a centroid; about ``sqrt(1/N_v + 1/N_i)`` for two
    samples of the same distribution; large when the modalities form separate blobs.

    Args:
        features: (N, D) float features (any norm; normalised here).
        modality: (N,) bool (True = infrared) or ``"visible"`` / ``"infrared"`` strings.

    Returns:
        ``centroid_distance``, ``spread_visible``, ``spread_infrared``,
        ``centroid_gap_ratio``.

    Raises:
        ValueError: mismatched lengths, a single modality, NaN/inf or zero rows.
    """
    x = _features(features)
    is_ir = _modality_mask(modality, len(x))
    mu_v, mu_i = x[~is_ir].mean(0), x[is_ir].mean(0)
    s_v = float(np.sqrt(((x[~is_ir] - mu_v) ** 2).sum(1).mean()))
    s_i = float(np.sqrt(((x[is_ir] - mu_i) ** 2).sum(1).mean()))
    d = float(np.linalg.norm(mu_v - mu_i))
    spread = (s_v + s_i) / 2
    return {
        "centroid_distance": d,
        "spread_visible": s_v,
        "spread_infrared": s_i,
        "centroid_gap_ratio": d / spread if spread > 0 else float("inf") if d > 0 else 0.0,
    }


def _nn_accuracy(q: np.ndarray, qp: np.ndarray, g: np.ndarray, gp: np.ndarray, chunk: int) -> float:
    """Fraction of queries (with an identity present in the gallery) whose most similar
    gallery row (cosine; first index on ties) has their identity."""
    keep = np.isin(qp, gp)
    if not keep.any():
        raise ValueError("cross_modality_nn_accuracy: no identity occurs in both modalities")
    q, qp = q[keep], qp[keep]
    hits = 0
    for s in range(0, len(q), chunk):
        nn_idx = np.argmax(q[s : s + chunk] @ g.T, axis=1)
        hits += int((gp[nn_idx] == qp[s : s + chunk]).sum())
    return hits / len(q)


def cross_modality_nn_accuracy(
    features: np.ndarray | torch.Tensor, modality: np.ndarray, pids: np.ndarray, chunk: int = 4096
) -> dict[str, float]:
    """Cross-modality nearest-neighbour identity accuracy.

    For each infrared row: is its nearest visible row (cosine similarity of the
    L2-normalised rows, i.e. Euclidean nearest neighbour) of the same identity? And the
    reverse. Queries whose identity has no row in the other modality are left out (they
    cannot be right).

    Args:
        features: (N, D) float features.
        modality: (N,) bool (True = infrared) or ``"visible"`` / ``"infrared"`` strings.
        pids: (N,) identity labels.
        chunk: query rows per similarity block (memory ``chunk x N_other``).

    Returns:
        ``nn_acc_ir_to_vis``, ``nn_acc_vis_to_ir`` and their mean ``nn_acc_mean``.

    Raises:
        ValueError: mismatched lengths, a single modality, no shared identity.
    """
    x = _features(features)
    is_ir = _modality_mask(modality, len(x))
    p = _ids(pids, len(x))
    iv = _nn_accuracy(x[is_ir], p[is_ir], x[~is_ir], p[~is_ir], chunk)
    vi = _nn_accuracy(x[~is_ir], p[~is_ir], x[is_ir], p[is_ir], chunk)
    return {"nn_acc_ir_to_vis": iv, "nn_acc_vis_to_ir": vi, "nn_acc_mean": (iv + vi) / 2}


def linear_probe_modality(
    features: np.ndarray | torch.Tensor, modality: np.ndarray, folds: int = 5, seed: int = 0, C: float = 1.0
) -> dict[str, float]:
    """Cross-validated linear-probe accuracy of predicting the modality from a feature.

    A standardised logistic regression (``StandardScaler`` + sklearn
    ``LogisticRegression(C)``) on the L2-normalised rows, ``StratifiedKFold(folds,
    shuffle=True, random_state=seed)``. High accuracy: the modality is linearly readable
    from the features. The balanced accuracy is 0.5 at chance whatever the class
    ratio; the plain accuracy is to be compared with ``probe_majority`` (the fraction of
    the larger modality).

    Args:
        features: (N, D) float features.
        modality: (N,) bool (True = infrared) or ``"visible"`` / ``"infrared"`` strings.
        folds: cross-validation folds (reduced to the size of the smaller modality when
            it has fewer rows; at least 2 rows each are needed).
        seed: fold shuffling seed.
        C: inverse regularisation strength.

    Returns:
        ``probe_balanced_accuracy``, ``probe_accuracy`` (means over folds),
        ``probe_balanced_accuracy_std`` and ``probe_majority``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _features(features)
    is_ir = _modality_mask(modality, len(x))
    k = min(int(folds), int(is_ir.sum()), int((~is_ir).sum()))
    if k < 2:
        raise ValueError(
            "linear_probe_modality: need at least 2 rows of each modality, "
            f"got {int(is_ir.sum())} infrared and {int((~is_ir).sum())} visible"
        )
    y = is_ir.astype(int)
    bal, acc = [], []
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        clf.fit(x[tr], y[tr])
        pred = clf.predict(x[te])
        bal.append(balanced_accuracy_score(y[te], pred))
        acc.append(accuracy_score(y[te], pred))
    return {
        "probe_balanced_accuracy": float(np.mean(bal)),
        "probe_balanced_accuracy_std": float(np.std(bal)),
        "probe_accuracy": float(np.mean(acc)),
        "probe_majority": float(max(is_ir.mean(), 1 - is_ir.mean())),
    }


def silhouettes(
    features: np.ndarray | torch.Tensor, modality: np.ndarray, pids: np.ndarray, max_samples: int = 4000, seed: int = 0
) -> dict[str, float]:
    """Silhouette scores (sklearn, cosine distance) of the rows grouped by modality and
    grouped by identity.

    Modality silhouette near 1 with identity silhouette near 0 or below: the features
    are organised by modality, not by person; a good cross-modality feature has the
    reverse. When N exceeds ``max_samples`` both scores use the same random subset of
    ``max_samples`` rows (``numpy.random.default_rng(seed)``).

    Args:
        features: (N, D) float features.
        modality: (N,) bool (True = infrared) or ``"visible"`` / ``"infrared"`` strings.
        pids: (N,) identity labels (at least 2 identities, fewer than the rows used).
        max_samples: subsample size for large N.
        seed: subsampling seed.

    Returns:
        ``silhouette_modality``, ``silhouette_identity`` in [-1, 1], ``silhouette_rows``.
    """
    from sklearn.metrics import silhouette_score

    x = _features(features)
    is_ir = _modality_mask(modality, len(x))
    p = _ids(pids, len(x))
    idx = np.arange(len(x))
    if len(x) > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), int(max_samples), replace=False))
    xs, ms, ps = x[idx], is_ir[idx], p[idx]
    if ms.all() or not ms.any():
        raise ValueError("silhouettes: the subsample holds a single modality; raise max_samples")
    n_ids = len(np.unique(ps))
    if not 2 <= n_ids <= len(xs) - 1:
        raise ValueError(f"silhouettes: need 2 <= identities <= rows - 1, got {n_ids} identities in {len(xs)} rows")
    return {
        "silhouette_modality": float(silhouette_score(xs, ms.astype(int), metric="cosine")),
        "silhouette_identity": float(silhouette_score(xs, ps, metric="cosine")),
        "silhouette_rows": int(len(xs)),
    }


def modality_gap(
    features: np.ndarray | torch.Tensor, modality: np.ndarray, pids: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """All modality-gap metrics of one feature set (the notebook-04 table row).

    Args:
        features: (N, D) float features (L2-normalised here).
        modality: (N,) bool (True = infrared) or ``"visible"`` / ``"infrared"`` strings.
        pids: (N,) identity labels (diagnostic only).
        seed: seed of the probe folds and of the silhouette subsample.

    Returns:
        flat dict: ``n``, ``n_visible``, ``n_infrared``, ``n_ids``; the entries of
        :func:`centroid_gap`, :func:`cross_modality_nn_accuracy`,
        :func:`linear_probe_modality` and :func:`silhouettes`.
    """
    x = _features(features)
    is_ir = _modality_mask(modality, len(x))
    p = _ids(pids, len(x))
    out: dict[str, float] = {
        "n": int(len(x)),
        "n_visible": int((~is_ir).sum()),
        "n_infrared": int(is_ir.sum()),
        "n_ids": int(len(np.unique(p))),
    }
    out.update(centroid_gap(x, is_ir))
    out.update(cross_modality_nn_accuracy(x, is_ir, p))
    out.update(linear_probe_modality(x, is_ir, seed=seed))
    out.update(silhouettes(x, is_ir, p, seed=seed))
    return out


# --------------------------------------------------------------------------------------
# 2-D embeddings, cached
# --------------------------------------------------------------------------------------

EMBED_DEFAULTS: dict[str, dict] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"},
    "tsne": {"perplexity": 30.0, "metric": "cosine", "init": "pca"},
}


def _embed_params(method: str, n: int, kw: dict) -> dict:
    if method not in EMBED_DEFAULTS:
        raise ValueError(f"embed_2d: method {method!r}; expected one of {sorted(EMBED_DEFAULTS)}")
    params = {**EMBED_DEFAULTS[method], **kw}
    if method == "umap":
        params["n_neighbors"] = int(min(params["n_neighbors"], n - 1))
    else:
        params["perplexity"] = float(min(params["perplexity"], max(1.0, (n - 1) / 3)))
    return params


def embed_key(features: np.ndarray, method: str, seed: int, params: dict) -> str:
    """SHA-1 of the float32 feature bytes, their shape, the method, seed and params."""
    import hashlib
    import json

    h = hashlib.sha1()
    x = np.ascontiguousarray(features, dtype=np.float32)
    h.update(np.asarray(x.shape, dtype=np.int64).tobytes())
    h.update(x.tobytes())
    h.update(json.dumps({"method": method, "seed": int(seed), "params": params}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def embed_2d(
    features: np.ndarray | torch.Tensor,
    method: str = "umap",
    seed: int = 0,
    cache_dir: str | None = None,
    **kw,
) -> np.ndarray:
    """2-D embedding of features for plotting: UMAP (umap-learn) or t-SNE (sklearn).

    Seeded (``random_state=seed``), so a rerun gives the same picture; with
    ``cache_dir`` the result is stored as ``<cache_dir>/<method>_<key>.npz`` where the
    key hashes the feature bytes, method, seed and parameters (:func:`embed_key`), and a
    later call with the same inputs reads it instead of recomputing.

    Args:
        features: (N, D) float features, N >= 4.
        method: ``"umap"`` (defaults ``n_neighbors=15, min_dist=0.1, metric="cosine"``)
            or ``"tsne"`` (``perplexity=30, metric="cosine", init="pca"``).
        seed: random state.
        cache_dir: cache folder (created), or None for no cache.
        **kw: parameters passed to ``umap.UMAP`` / ``sklearn.manifold.TSNE`` over the
            defaults. ``n_neighbors`` / ``perplexity`` are capped for small N.

    Returns:
        (N, 2) float32 coordinates.
    """
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"embed_2d: features must be (N, D) with N >= 4, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    params = _embed_params(method, len(x), kw)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{method}_{embed_key(x, method, seed, params)[:20]}.npz"
        if path.exists():
            with np.load(path) as z:
                return z["embedding"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap: "n_jobs overridden by random_state"; numba notes
        if method == "umap":
            import umap

            emb = umap.UMAP(n_components=2, random_state=seed, **params).fit_transform(x)
        else:
            from sklearn.manifold import TSNE

            emb = TSNE(n_components=2, random_state=seed, **params).fit_transform(x)
    emb = np.asarray(emb, dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, embedding=emb)
        os.replace(tmp, path)
    return emb


# --------------------------------------------------------------------------------------
# DBSCAN vs HDBSCAN on the same features
# --------------------------------------------------------------------------------------


def compare_clusterings(
    features: np.ndarray | torch.Tensor,
    pids: np.ndarray,
    modality: np.ndarray | None = None,
    camids: np.ndarray | None = None,
    k1: int = 30,
    k2: int = 6,
    eps: float = 0.6,
    min_samples: int = 4,
    min_cluster_size: int = 4,
) -> dict[str, dict[str, float]]:
    """DBSCAN and HDBSCAN on the same k-reciprocal Jaccard distances, scored against
    the true identities (a diagnostic).

    Distances: :func:`cmamlib.clustering.jaccard_distance` of the features (after
    :func:`cmamlib.clustering.camera_centre` when ``camids`` is given, as the training
    stages cluster); clusters: :func:`cmamlib.clustering.cluster_dbscan` (``eps``,
    ``min_samples``) and :func:`cmamlib.clustering.cluster_hdbscan`
    (``min_cluster_size``); scores: :func:`cmamlib.clustering.label_quality`.

    Args:
        features: (N, D) float features, L2-normalised rows.
        pids: (N,) true identities.
        modality: optional (N,) bool (True = infrared) or strings: adds
            ``cross_modal_clusters``, the fraction of clusters holding both modalities.
        camids: optional (N,) camera ids for per-camera centring.
        k1, k2: Jaccard parameters (``k1`` capped at N - 1, ``k2`` at ``k1``).
        eps, min_samples: DBSCAN parameters.
        min_cluster_size: HDBSCAN parameter. Each parameter is one value (a
            ``(visible, infrared)`` pair raises ``ValueError``: this is one clustering of
            both modalities, as the joint ablation).

    Returns:
        ``{"dbscan": {...}, "hdbscan": {...}}``, each with ``clusters``,
        ``noise_fraction``, ``ari``, ``nmi``, ``purity`` (and ``cross_modal_clusters``).
    """
    from .clustering import camera_centre, cluster_dbscan, cluster_hdbscan, jaccard_distance, label_quality

    for name, v in (
        ("k1", k1),
        ("k2", k2),
        ("eps", eps),
        ("min_samples", min_samples),
        ("min_cluster_size", min_cluster_size),
    ):
        if isinstance(v, (list, tuple, np.ndarray)):
            raise ValueError(
                f"compare_clusterings: {name}={v!r}: one clustering of both modalities takes one value; "
                f"for a per-modality (visible, infrared) SelfTrainConfig pair pass one modality's value, "
                f"e.g. SelfTrainConfig.dbscan_params('visible')"
            )
    x = _features(features)
    p = _ids(pids, len(x))
    is_ir = None if modality is None else _modality_mask(modality, len(x))
    if len(x) < 3:
        raise ValueError(f"compare_clusterings: need at least 3 rows, got {len(x)}")
    xt = torch.from_numpy(x.astype(np.float32))
    if camids is not None:
        xt = camera_centre(xt, np.asarray(camids))
    k1 = min(int(k1), len(x) - 1)
    dist = jaccard_distance(xt, k1=k1, k2=min(int(k2), k1))
    out = {}
    for name, labels in (
        ("dbscan", cluster_dbscan(dist, eps=eps, min_samples=min_samples)),
        ("hdbscan", cluster_hdbscan(dist, min_cluster_size=min_cluster_size)),
    ):
        q = label_quality(labels, p)
        if is_ir is not None:
            ks = np.unique(labels[labels >= 0])
            both = [k for k in ks if is_ir[labels == k].any() and (~is_ir[labels == k]).any()]
            q["cross_modal_clusters"] = len(both) / len(ks) if len(ks) else 0.0
        out[name] = q
    return out
