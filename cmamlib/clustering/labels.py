"""Pseudo labels of a feature set (Jaccard + DBSCAN), camera centring, and label quality
against true ids (diagnostics)."""

from __future__ import annotations

import numpy as np
import torch

from .dbscan import cluster_dbscan
from .jaccard import jaccard_distance, jaccard_distance_sparse
from .knn import _as_features

# --------------------------------------------------------------------------------------
# pseudo labels for training, and their quality (diagnostics only)
# --------------------------------------------------------------------------------------


def pseudo_labels(
    features: torch.Tensor | np.ndarray,
    k1: int = 30,
    k2: int = 6,
    eps: float = 0.6,
    min_samples: int = 4,
    sparse_above: int = 20000,
    camids: np.ndarray | None = None,
    knn_backend: str = "torch",
) -> np.ndarray:
    """Jaccard distance + DBSCAN pseudo labels, as cluster-contrast re-ID and the CMAM
    authors' code compute them once per epoch.

    Args:
        features: (N, D) float, L2-normalised rows.
        k1, k2: :func:`jaccard_distance` parameters; ``k1`` is reduced to ``N - 1`` for
            tiny sets (fewer than ``k1 + 1`` samples) so that smoke runs work.
        eps, min_samples: :func:`cluster_dbscan` parameters.
        sparse_above: use the bounded-memory :func:`jaccard_distance_sparse` when
            N is larger (identical labels, less memory).
        camids: optional (N,) camera ids: features are first centred per camera
            (:func:`camera_centre`), so that clusters follow identities across cameras
            instead of camera look-alikes.
        knn_backend: kNN search of the Jaccard distance (:func:`knn_self_first`):
            ``"torch"``, ``"faiss"`` (optional dependency) or ``"auto"``.

    Returns:
        (N,) int64 labels 0..K-1, -1 for noise.
    """
    n = int(features.shape[0])
    if camids is not None:
        features = camera_centre(features, camids)
    k1 = min(int(k1), n - 1)
    k2 = min(int(k2), k1)
    if n > sparse_above and eps < 1:
        dist = jaccard_distance_sparse(features, k1=k1, k2=k2, knn_backend=knn_backend)
    else:
        dist = jaccard_distance(features, k1=k1, k2=k2, knn_backend=knn_backend)
    return cluster_dbscan(dist, eps=eps, min_samples=min_samples)


def camera_centre(features: torch.Tensor | np.ndarray, camids: np.ndarray, standardise: bool = False) -> torch.Tensor:
    """Subtract each camera's mean feature (and with ``standardise`` divide by its
    per-dimension standard deviation), then L2-normalise the rows.

    Random-init (and weakly trained) features cluster by camera (background, colour
    cast) far more than by identity; centring per camera removes the shared camera
    component (the camera-aware feature normalisation of unsupervised re-ID, e.g.
    intra-camera mean subtraction in ICE, Chen et al. ICCV 2021). Camera ids are
    unsupervised metadata (file names), not identity labels.

    Args:
        features: (N, D) float.
        camids: (N,) int camera ids.
        standardise: also scale each camera's dimensions to unit spread (a diagnostic
            of :mod:`benchmarks.probe_matching`; stage 1 and 2 only centre).
    Returns:
        (N, D) float32 tensor, L2-normalised rows.
    """
    x = _as_features(features).clone()
    cams = np.asarray(camids).reshape(-1)
    if len(cams) != x.shape[0]:
        raise ValueError(f"camids has {len(cams)} entries for {x.shape[0]} features")
    for c in np.unique(cams):
        idx = torch.from_numpy(np.flatnonzero(cams == c))
        x[idx] -= x[idx].mean(0, keepdim=True)
        if standardise:
            x[idx] /= x[idx].std(0, keepdim=True) + 1e-6
    return torch.nn.functional.normalize(x, dim=1)


def cluster_majority(labels: np.ndarray, true_ids: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """Majority true identity of every cluster (a diagnostic: true ids are never used for
    training).

    Args:
        labels: (N,) int pseudo labels, -1 = noise (skipped).
        true_ids: (N,) int true identities.

    Returns:
        ``{cluster: (majority id, its count, cluster size)}`` for every cluster id >= 0;
        ties go to the smallest identity. Purity of a cluster = count / size.
    """
    labels = np.asarray(labels).reshape(-1)
    true_ids = np.asarray(true_ids).reshape(-1)
    if labels.shape != true_ids.shape:
        raise ValueError(f"labels has {labels.shape[0]} entries, true_ids {true_ids.shape[0]}")
    keep = labels >= 0
    if not keep.any():
        return {}
    l_uniq, l_inv = np.unique(labels[keep], return_inverse=True)
    t_uniq, t_inv = np.unique(true_ids[keep], return_inverse=True)
    counts = np.zeros((len(l_uniq), len(t_uniq)), dtype=np.int64)
    np.add.at(counts, (l_inv, t_inv), 1)
    best = counts.argmax(1)  # first maximum: the smallest identity among ties
    sizes = counts.sum(1)
    return {int(c): (int(t_uniq[b]), int(counts[k, b]), int(sizes[k])) for k, (c, b) in enumerate(zip(l_uniq, best))}


def label_quality(labels: np.ndarray, true_ids: np.ndarray) -> dict[str, float]:
    """Quality of pseudo labels against the true identities (a diagnostic: true ids are
    never used for training).

    Args:
        labels: (N,) int pseudo labels, -1 = noise.
        true_ids: (N,) int true identities.

    Returns:
        ``clusters`` (number of clusters), ``noise_fraction``, and on the non-noise
        samples: ``ari`` (adjusted Rand index), ``nmi`` (normalised mutual
        information) and ``purity`` (fraction of samples whose cluster's majority true
        identity is their own); 0 for the three when every sample is noise.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels).reshape(-1)
    true_ids = np.asarray(true_ids).reshape(-1)
    if labels.shape != true_ids.shape:
        raise ValueError(f"labels has {labels.shape[0]} entries, true_ids {true_ids.shape[0]}")
    keep = labels >= 0
    out = {
        "clusters": int(len(np.unique(labels[keep]))),
        "noise_fraction": float(1 - keep.mean()) if len(labels) else 0.0,
        "ari": 0.0,
        "nmi": 0.0,
        "purity": 0.0,
    }
    if keep.any():
        lab, tid = labels[keep], true_ids[keep]
        out["ari"] = float(adjusted_rand_score(tid, lab))
        out["nmi"] = float(normalized_mutual_info_score(tid, lab))
        _, t_inv = np.unique(tid, return_inverse=True)
        _, l_inv = np.unique(lab, return_inverse=True)
        counts = np.zeros((l_inv.max() + 1, t_inv.max() + 1), dtype=np.int64)
        np.add.at(counts, (l_inv, t_inv), 1)
        out["purity"] = float(counts.max(1).sum() / keep.sum())
    return out
