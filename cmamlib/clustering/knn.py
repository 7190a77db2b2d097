"""Input checks and the exact kNN search of the Jaccard distance (chunked torch top-k, faiss optional)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------
# input checks and kNN
# --------------------------------------------------------------------------------------


def _as_features(features: Any) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        x = features.detach()
    else:
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(features)))
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 features, got {x.shape[0]}")
    if not torch.is_floating_point(x):
        raise ValueError(f"features must be floating point, got dtype {x.dtype}")
    x = x.to(torch.float32).contiguous()
    if not torch.isfinite(x.sum()):  # one cheap pass; the full check only on failure
        bad = ~torch.isfinite(x)
        if bad.any():
            rows = torch.nonzero(bad.any(1)).flatten()[:5].tolist()
            raise ValueError(f"features contain {int(bad.sum())} NaN/inf values (rows {rows}...)")
    return x


def _check_k(k1: int, k2: int, n: int) -> None:
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if k1 >= n:
        raise ValueError(f"k1={k1} must be smaller than the number of features N={n}")


def knn_self_first(
    features: torch.Tensor | np.ndarray,
    k: int,
    chunk_size: int = 2048,
    backend: str = "torch",
) -> np.ndarray:
    """Exact k nearest neighbours by Euclidean distance, each sample first in its row.

    Args:
        features: (N, D) float.
        k: neighbours per row, self included (``k <= N``).
        chunk_size: rows of the symmetric distance blocks (memory ``chunk_size^2``
            floats a block).
        backend: ``"torch"`` (exact chunked top-k, default), ``"faiss"`` (IndexFlatL2,
            needs the optional faiss extra) or ``"auto"`` (faiss when importable).

    Returns:
        (N, k) int64 neighbour indices sorted by distance; column 0 is the row itself
        (ties between equal distances are broken arbitrarily).
    """
    return _knn(_as_features(features), k, chunk_size, backend)[0]


def _knn(x: torch.Tensor, k: int, chunk_size: int, backend: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, k) self-first neighbour indices and, for the torch path, their dot products."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, N={n}]")
    if backend not in ("torch", "faiss", "auto"):
        raise ValueError(f"backend must be 'torch', 'faiss' or 'auto', got {backend!r}")
    if backend in ("faiss", "auto"):
        try:
            import faiss  # type: ignore
        except ImportError:
            if backend == "faiss":
                raise ValueError("backend='faiss' requested but faiss is not installed (pip install cmamlib[faiss])")
            faiss = None
        if faiss is not None:
            xn = x.cpu().numpy()
            index = faiss.IndexFlatL2(xn.shape[1])
            index.add(xn)
            _, idx = index.search(xn, min(k + 1, n))
            return _force_self_first(idx.astype(np.int64), k), None
    return _knn_torch(x, k, max(1, int(chunk_size)))


def _knn_torch(x: torch.Tensor, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN over symmetric blocks: each product ``X_a @ X_b.T`` (a <= b) serves
    the rows of a and, transposed, the rows of b, so the N^2 D work is halved. The
    products run in torch; the per-block selection (``argpartition``) and the running
    top-k merge run in numpy, which stays fast when other processes share the cores."""
    n = x.shape[0]
    sq_t = (x * x).sum(1)
    sq = sq_t.cpu().numpy()
    best_d = np.full((n, k), np.inf, dtype=np.float32)
    best_i = np.zeros((n, k), dtype=np.int64)

    def merge(r0: int, r1: int, d: np.ndarray, c0: int) -> None:
        kk = min(k, d.shape[1])
        if kk < d.shape[1]:
            i = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        else:
            i = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        cand_v = np.concatenate([best_d[r0:r1], np.take_along_axis(d, i, axis=1)], axis=1)
        cand_i = np.concatenate([best_i[r0:r1], i + c0], axis=1)
        j = np.argpartition(cand_v, k - 1, axis=1)[:, :k]
        best_d[r0:r1] = np.take_along_axis(cand_v, j, axis=1)
        best_i[r0:r1] = np.take_along_axis(cand_i, j, axis=1)

    starts = list(range(0, n, block))
    for a, sa in enumerate(starts):
        ea = min(n, sa + block)
        for sb in starts[a:]:
            eb = min(n, sb + block)
            p = (x[sa:ea] @ x[sb:eb].T).cpu().numpy()
            # |x_i|^2 + |x_j|^2 - 2 x_i.x_j less the row constant |x_i|^2 (same order per row)
            d = p * np.float32(-2.0)
            d += sq[None, sb:eb]
            if sa == sb:
                np.fill_diagonal(d, -np.inf)  # self first
            merge(sa, ea, d, sb)
            if sa != sb:
                d = np.multiply(p.T, np.float32(-2.0), order="C")  # rows of b, contiguous
                d += sq[None, sa:ea]
                merge(sb, eb, d, sa)
            del p, d
    order = np.argsort(best_d, axis=1, kind="stable")  # sort the k by distance, self first
    best_d = np.take_along_axis(best_d, order, axis=1)
    best_i = np.take_along_axis(best_i, order, axis=1)
    # x_i . x_j = (|x_j|^2 - d_ij) / 2 (float32 rounding ~1e-7); self: |x_i|^2
    dots = (sq[best_i] - best_d) / np.float32(2.0)
    dots[:, 0] = sq
    return best_i, dots.astype(np.float32)


def _force_self_first(idx: np.ndarray, k: int) -> np.ndarray:
    """Rows of (N, >=k) neighbours -> (N, k) with the row itself in column 0."""
    n = idx.shape[0]
    rows = np.arange(n)
    out = np.empty((n, k), dtype=np.int64)
    out[:, 0] = rows
    for i in range(n):  # only for the faiss path; duplicates make self not always first
        rest = idx[i][idx[i] != i]
        out[i, 1:] = rest[: k - 1]
    return out
