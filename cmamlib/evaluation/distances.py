"""Query x gallery distances of L2-normalised features: ``-q @ g.T`` (the baseline's
choice; it ranks exactly as the Euclidean distance does), in chunks with torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _as_float_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        t = t.to(torch.float64)
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN values")
    return t.detach().cpu()


def pairwise_distance(
    query: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    metric: str = "neg_dot",
    normalize: bool = True,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Query x gallery distances, computed in chunks of query rows with torch.

    Args:
        query: (Q, D) float features.
        gallery: (G, D) float features.
        metric: ``"neg_dot"`` (``-q @ g.T``, as Cross-Modal-Re-ID-baseline ranks) or
            ``"euclidean"``. On L2-normalised features they give the same ranking
            (squared Euclidean = 2 + 2 * neg_dot).
        normalize: L2-normalise both sides first.
        chunk_size: query rows per matrix product.

    Returns:
        (Q, G) float64 distances (float64 arithmetic, as the baseline's numpy matmul).
    """
    q = _as_float_tensor(query, "query").to(torch.float64)
    g = _as_float_tensor(gallery, "gallery").to(torch.float64)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: query {tuple(q.shape)}, gallery {tuple(g.shape)}")
    if metric not in ("neg_dot", "euclidean"):
        raise ValueError(f"metric must be 'neg_dot' or 'euclidean', got {metric!r}")
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float64)
    g_sq = (g * g).sum(1)
    for s in range(0, q.shape[0], max(1, int(chunk_size))):
        qc = q[s : s + chunk_size]
        prod = qc @ g.T
        if metric == "neg_dot":
            d = -prod
        else:
            d = ((qc * qc).sum(1, keepdim=True) + g_sq[None, :] - 2.0 * prod).clamp_min_(0).sqrt_()
        out[s : s + qc.shape[0]] = d.numpy()
    return out


def _cdist(q: torch.Tensor, g: torch.Tensor, normalize: bool) -> np.ndarray:
    """Euclidean distances computed directly (no ``|q|^2 + |g|^2 - 2 q.g`` expansion), in
    float64, as ``scipy.spatial.distance.cdist`` in the authors' code."""
    q, g = q.to(torch.float64), g.to(torch.float64)
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float64)
    for s in range(0, q.shape[0], 1024):
        out[s : s + 1024] = torch.cdist(q[s : s + 1024], g, compute_mode="donot_use_mm_for_euclid_dist").numpy()
    return out
