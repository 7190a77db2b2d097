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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

try:  # optional accelerator of the min-overlap step (installed with umap-learn)
    import numba
except ImportError:  # pragma: no cover - exercised through use_numba=False
    numba = None

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


# --------------------------------------------------------------------------------------
# k-reciprocal encoding (steps 2-5) as sparse algebra
# --------------------------------------------------------------------------------------


def _neighbour_graph(initial_rank: np.ndarray, k: int) -> sp.csr_matrix:
    n = initial_rank.shape[0]
    k = min(k, initial_rank.shape[1])
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = initial_rank[:, :k].reshape(-1)
    return sp.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, cols)), shape=(n, n))


def _reciprocal(initial_rank: np.ndarray, k: int) -> sp.csr_matrix:
    f = _neighbour_graph(initial_rank, k)
    r = f.multiply(f.T).tocsr()  # j in N(i) and i in N(j)
    r.sort_indices()
    return r


def _expanded_sets(initial_rank: np.ndarray, k1: int, row_block: int = 8192) -> sp.csr_matrix:
    """Pattern (values 1) of the expanded k-reciprocal sets E(i)."""
    n = initial_rank.shape[0]
    r = _reciprocal(initial_rank, k1)
    rh = _reciprocal(initial_rank, int(np.around(k1 / 2)) + 1)
    half_len = np.diff(rh.indptr).astype(np.float64)
    rh_t = rh.T.tocsr()
    pieces = []
    for s in range(0, n, row_block):
        rb = r[s : s + row_block]
        overlap = (rb @ rh_t).multiply(rb).tocsr()  # |R(i) & R_half(c)| on c in R(i) (>= 1)
        overlap.sort_indices()
        keep = overlap.data > (2.0 / 3.0) * half_len[overlap.indices]
        cond = sp.csr_matrix((keep.astype(np.float32), overlap.indices, overlap.indptr), shape=overlap.shape)
        cond.eliminate_zeros()
        pieces.append(rb + cond @ rh)
    e = sp.vstack(pieces).tocsr()
    e.data[:] = 1.0
    e.sort_indices()
    return e


def _pattern_dots(
    x: torch.Tensor, pattern: sp.csr_matrix, initial_rank: np.ndarray, knn_dots: np.ndarray | None
) -> np.ndarray:
    """``x_i . x_j`` on the stored entries of ``pattern``: read from the kNN search
    where j is one of i's neighbours (most of E(i)), computed for the rest."""
    n = pattern.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(pattern.indptr))
    keys = rows * n + pattern.indices
    if knn_dots is None:
        missing = np.ones(len(keys), dtype=bool)
        out = np.empty(len(keys), dtype=np.float32)
    else:
        k = initial_rank.shape[1]
        nkeys = np.repeat(np.arange(n, dtype=np.int64), k) * n + initial_rank.reshape(-1)
        order = np.argsort(nkeys, kind="stable")
        nkeys, ndots = nkeys[order], knn_dots.reshape(-1)[order]
        pos = np.minimum(np.searchsorted(nkeys, keys), len(nkeys) - 1)
        found = nkeys[pos] == keys
        out = np.where(found, ndots[pos], 0).astype(np.float32)
        missing = ~found
    if missing.any() and numba is not None and x.device.type == "cpu":
        mrows = rows[missing]
        m_indptr = np.concatenate([[0], np.cumsum(np.bincount(mrows, minlength=n))])
        m_out = np.empty(len(mrows), dtype=np.float32)
        _nb_pair_dots(x.numpy(), m_indptr, pattern.indices[missing].astype(np.int64), m_out)
        out[missing] = m_out
    elif missing.any():
        mrows = torch.from_numpy(rows[missing]).to(x.device)
        mcols = torch.from_numpy(pattern.indices[missing].astype(np.int64)).to(x.device)
        step = max(1, (1 << 26) // (4 * x.shape[1]))  # ~64 MB per gathered block
        vals = [(x[mrows[i : i + step]] * x[mcols[i : i + step]]).sum(1) for i in range(0, len(mrows), step)]
        out[missing] = torch.cat(vals).cpu().numpy()
    return out


def _encoding(x: torch.Tensor, k1: int, k2: int, knn_chunk: int, knn_backend: str) -> sp.csr_matrix:
    """Steps 1-5: the query-expanded k-reciprocal weight matrix V (N x N CSR float64)."""
    n = x.shape[0]
    initial_rank, knn_dots = _knn(x, k1, knn_chunk, knn_backend)
    e = _expanded_sets(initial_rank, k1)
    # step 4: row-wise softmax of -(2 - 2 x_i . x_j) over E(i)
    logits = -(2.0 - 2.0 * _pattern_dots(x, e, initial_rank, knn_dots).astype(np.float64))
    starts = e.indptr[:-1]
    row_max = np.maximum.reduceat(logits, starts)  # every E(i) holds i, rows are non-empty
    w = np.exp(logits - np.repeat(row_max, np.diff(e.indptr)))
    w /= np.repeat(np.add.reduceat(w, starts), np.diff(e.indptr))
    v = sp.csr_matrix((w, e.indices, e.indptr), shape=(n, n))
    # step 5: mean over the first k2 neighbours (the reference keeps V when k2 == 1)
    if k2 != 1:
        kq = min(k2, initial_rank.shape[1])
        q = _neighbour_graph(initial_rank, kq).astype(np.float64)
        v = (q @ v) / kq
        v = v.tocsr()
    v.sort_indices()
    return v


# --------------------------------------------------------------------------------------
# step 6: sum of minima over shared supports, in row blocks
# --------------------------------------------------------------------------------------


def _min_overlap_blocks_numpy(v: sp.csr_matrix, vc: sp.csc_matrix, blocks):
    """Yield ``(start, stop, S)`` with S the dense (stop - start, N) float64 block of
    ``S[i, j] = sum_k min(V[i, k], V[j, k])`` (numpy path, no numba).

    Each stored V[i, k] meets the stored entries of column k; the contributions of a
    block of rows are accumulated with one ``bincount``.
    """
    n = v.shape[0]
    col_cnt = np.diff(vc.indptr).astype(np.int64)
    for s, e in blocks:
        lo, hi = v.indptr[s], v.indptr[e]
        k = v.indices[lo:hi]
        a = v.data[lo:hi]
        local = np.repeat(np.arange(e - s, dtype=np.int64), np.diff(v.indptr[s : e + 1]))
        cnt = col_cnt[k]
        total = int(cnt.sum())
        offs = np.cumsum(cnt) - cnt
        pos = np.repeat(vc.indptr[k].astype(np.int64) - offs, cnt) + np.arange(total, dtype=np.int64)
        j = vc.indices[pos].astype(np.int64)
        m = np.minimum(np.repeat(a, cnt), vc.data[pos])
        key = np.repeat(local * n, cnt) + j
        del pos
        yield s, e, np.bincount(key, weights=m, minlength=(e - s) * n).reshape(e - s, n)


if numba is not None:

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _nb_jaccard_dense(indptr, indices, data, cptr, crow, cval, start, stop, out):  # pragma: no cover
        """out[r, :] = Jaccard distances of row start + r (float32 (stop - start, N))."""
        n = out.shape[1]
        for r in numba.prange(stop - start):
            i = start + r
            acc = np.zeros(n)
            for p in range(indptr[i], indptr[i + 1]):
                k = indices[p]
                a = data[p]
                for q in range(cptr[k], cptr[k + 1]):
                    b = cval[q]
                    acc[crow[q]] += a if a < b else b
            acc[i] = 1.0  # S[i, i] = sum_k V[i, k] = 1 (exact in theory)
            for j in range(n):
                sv = acc[j]
                d = 1.0 - sv / (2.0 - sv)
                out[r, j] = d if d > 0.0 else 0.0

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _nb_overlap_touch(
        indptr, indices, data, cptr, crow, cval, start, stop, acc, touched, ntouch, nkeep
    ):  # pragma: no cover
        """Sparse variant: accumulate into acc rows, list the touched columns, count
        the entries whose float32 distance is below 1."""
        for r in numba.prange(stop - start):
            i = start + r
            cnt = 0
            for p in range(indptr[i], indptr[i + 1]):
                k = indices[p]
                a = data[p]
                for q in range(cptr[k], cptr[k + 1]):
                    j = crow[q]
                    b = cval[q]
                    if acc[r, j] == 0.0:  # stored V entries are > 0: first touch
                        touched[r, cnt] = j
                        cnt += 1
                    acc[r, j] += a if a < b else b
            if acc[r, i] == 0.0:  # cannot happen (V[i, i] > 0); keeps acc/touched consistent
                touched[r, cnt] = i
                cnt += 1
            acc[r, i] = 1.0  # S[i, i] = sum_k V[i, k] = 1 (exact in theory)
            keep = 0
            for t in range(cnt):
                sv = acc[r, touched[r, t]]
                d = 1.0 - sv / (2.0 - sv)
                if np.float32(d) < np.float32(1.0):
                    keep += 1
            ntouch[r] = cnt
            nkeep[r] = keep

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _nb_emit(acc, touched, ntouch, offsets, out_idx, out_val):  # pragma: no cover
        """Write the kept (column, distance) pairs of each row, columns in increasing
        order, and reset acc to zero: sort the touched list in place when it is short,
        else scan the whole accumulator row (no allocation in the parallel loop)."""
        n = acc.shape[1]
        one = np.float32(1.0)
        for r in numba.prange(len(ntouch)):
            m = ntouch[r]
            o = offsets[r]
            if m * (np.log2(m + 1.0) + 1.0) * 2.0 < n:
                cols = touched[r, :m]
                cols.sort()
                for t in range(m):
                    j = cols[t]
                    sv = acc[r, j]
                    acc[r, j] = 0.0
                    d = 1.0 - sv / (2.0 - sv)
                    d32 = np.float32(d if d > 0.0 else 0.0)
                    if d32 < one:
                        out_idx[o] = j
                        out_val[o] = d32
                        o += 1
            else:
                for j in range(n):
                    sv = acc[r, j]
                    if sv != 0.0:
                        acc[r, j] = 0.0
                        d = 1.0 - sv / (2.0 - sv)
                        d32 = np.float32(d if d > 0.0 else 0.0)
                        if d32 < one:
                            out_idx[o] = j
                            out_val[o] = d32
                            o += 1

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _nb_pair_dots(x, indptr, cols, out):  # pragma: no cover
        """out[p] = x[i] . x[cols[p]] for the pairs of row i (CSR layout)."""
        d = x.shape[1]
        for i in numba.prange(len(indptr) - 1):
            for p in range(indptr[i], indptr[i + 1]):
                j = cols[p]
                acc = np.float32(0.0)
                for t in range(d):
                    acc += x[i, t] * x[j, t]
                out[p] = acc


def _overlap_plan(v: sp.csr_matrix, max_contrib: int, max_block_cells: int):
    """CSC copy of V and row blocks of bounded work / memory."""
    n = v.shape[0]
    vc = v.tocsc()
    vc.sort_indices()
    col_cnt = np.diff(vc.indptr).astype(np.int64)
    entry_cost = col_cnt[v.indices]
    row_cost = np.add.reduceat(entry_cost, v.indptr[:-1]) if len(entry_cost) else np.zeros(n, np.int64)
    row_cost = np.where(np.diff(v.indptr) > 0, row_cost, 0)
    cum_cost = np.concatenate([[0], np.cumsum(row_cost)])
    max_rows = max(1, max_block_cells // n)
    blocks, s = [], 0
    while s < n:
        e = int(np.searchsorted(cum_cost, cum_cost[s] + max_contrib, side="right")) - 1
        e = min(max(e, s + 1), s + max_rows, n)
        blocks.append((s, e))
        s = e
    return vc, blocks


def _to_distance(s: np.ndarray) -> np.ndarray:
    d = 1.0 - s / (2.0 - s)
    np.maximum(d, 0.0, out=d)  # the reference clips negatives to 0
    return d.astype(np.float32)


def _zero_diagonal(block: np.ndarray, start: int) -> None:
    """S[i, i] = sum_k V[i, k] = 1 exactly in theory; rounding leaves ~1e-16."""
    r = np.arange(block.shape[0])
    block[r, start + r] = 1.0


def _use_numba(flag: bool | None) -> bool:
    if flag is None:
        return numba is not None
    if flag and numba is None:
        raise ValueError("use_numba=True but numba is not installed")
    return bool(flag)


def jaccard_distance(
    features: torch.Tensor | np.ndarray,
    k1: int = 30,
    k2: int = 6,
    knn_chunk: int = 2048,
    knn_backend: str = "torch",
    max_contrib: int = 1 << 23,
    use_numba: bool | None = None,
) -> np.ndarray:
    """Dense k-reciprocal Jaccard distance (Zhong et al. CVPR 2017, as cluster-contrast).

    Args:
        features: (N, D) float32 tensor or array, L2-normalised (the weights use
            ``2 - 2 x_i . x_j`` as the squared distance, as the reference does).
        k1: k-reciprocal neighbourhood size (self included), ``k1 < N``.
        k2: query-expansion neighbourhood size (self included).
        knn_chunk: rows per kNN distance block.
        knn_backend: see :func:`knn_self_first`.
        max_contrib: work bound of the numpy min-overlap path (contributions per block).
        use_numba: numba kernel for the min-overlap step; default: when installed.

    Returns:
        (N, N) float32 distances in [0, 1], 0 on the diagonal, 1 for pairs whose
        encodings do not overlap.

    Raises:
        ValueError: not 2-D, NaN/inf values, ``k1 >= N``, non-positive k.
    """
    x = _as_features(features)
    n = x.shape[0]
    _check_k(k1, k2, n)
    v = _encoding(x, k1, k2, knn_chunk, knn_backend)
    vc, blocks = _overlap_plan(v, max_contrib, max_block_cells=1 << 24)
    out = np.empty((n, n), dtype=np.float32)  # the numba kernel needs no row blocks
    if _use_numba(use_numba):
        _nb_jaccard_dense(v.indptr, v.indices, v.data, vc.indptr, vc.indices, vc.data, 0, n, out)
    else:
        for s, e, block in _min_overlap_blocks_numpy(v, vc, blocks):
            _zero_diagonal(block, s)
            out[s:e] = _to_distance(block)
    return out


def jaccard_distance_sparse(
    features: torch.Tensor | np.ndarray,
    k1: int = 30,
    k2: int = 6,
    knn_chunk: int = 2048,
    knn_backend: str = "torch",
    max_contrib: int = 1 << 23,
    max_block_cells: int = 1 << 24,
    use_numba: bool | None = None,
) -> sp.csr_matrix:
    """:func:`jaccard_distance` for large N: only the entries below 1, in bounded memory.

    Same values as the dense function; pairs whose encodings do not overlap (distance
    1 in float32) are not stored. Zeros *are* stored explicitly (the diagonal,
    identical neighbourhoods), so that scipy / sklearn read them as distance 0, not as
    missing. Memory: the features, the sparse encoding (tens to hundreds of entries a
    row at k1=30), the output, and one row block of ``max_block_cells`` accumulator
    cells (12 bytes each with numba; the numpy path adds ``max_contrib`` work entries of
    about 60 bytes); no N x N array is formed.

    Args:
        features, k1, k2, knn_chunk, knn_backend, use_numba: as :func:`jaccard_distance`.
        max_contrib: contributions per row block of the numpy path.
        max_block_cells: accumulator cells per row block (rows x N).

    Returns:
        (N, N) ``scipy.sparse.csr_matrix`` float32 with sorted indices.
    """
    _mmap_large_allocations()
    x = _as_features(features)
    n = x.shape[0]
    _check_k(k1, k2, n)
    v = _encoding(x, k1, k2, knn_chunk, knn_backend)
    numba_path = _use_numba(use_numba)
    vc, blocks = _overlap_plan(v, max_contrib if not numba_path else np.iinfo(np.int64).max // 4, max_block_cells)
    del x
    indptr = np.zeros(n + 1, dtype=np.int64)
    idx_parts, val_parts = [], []
    if numba_path:
        rows = blocks[0][1] - blocks[0][0]
        acc = np.zeros((rows, n))
        touched = np.empty((rows, n), dtype=np.int32)
        for s, e in blocks:
            b = e - s
            ntouch = np.empty(b, dtype=np.int64)
            nkeep = np.empty(b, dtype=np.int64)
            _nb_overlap_touch(
                v.indptr, v.indices, v.data, vc.indptr, vc.indices, vc.data, s, e, acc, touched, ntouch, nkeep
            )
            offsets = np.concatenate([[0], np.cumsum(nkeep)[:-1]])
            cols = np.empty(int(nkeep.sum()), dtype=np.int32)
            vals = np.empty(len(cols), dtype=np.float32)
            _nb_emit(acc, touched, ntouch, offsets, cols, vals)
            indptr[s + 1 : e + 1] = nkeep
            idx_parts.append(cols)
            val_parts.append(vals)
        del acc, touched
    else:
        for s, e, block in _min_overlap_blocks_numpy(v, vc, blocks):
            _zero_diagonal(block, s)
            r, c = np.nonzero(block > 0)
            vals = _to_distance(block[r, c])
            below = vals < 1.0  # S so small that 1 - S/(2-S) rounds to 1 in float32
            r, c, vals = r[below], c[below], vals[below]
            indptr[s + 1 : e + 1] = np.bincount(r, minlength=e - s)
            idx_parts.append(c.astype(np.int32))
            val_parts.append(vals)
            del block
    del v, vc
    np.cumsum(indptr, out=indptr)
    nnz = int(indptr[-1])
    index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
    indptr = indptr.astype(index_dtype)
    indices = _concat_freeing(idx_parts, nnz, index_dtype)
    data = _concat_freeing(val_parts, nnz, np.float32)
    out = sp.csr_matrix((data, indices, indptr), shape=(n, n), copy=False)
    out.has_sorted_indices = True
    return out


def _mmap_large_allocations(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes or more with mmap (glibc ``mallopt``).

    glibc raises its mmap threshold dynamically up to 32 MB after the first large free,
    so the row-block parts (a few MB each) land on the heap and freeing them while
    concatenating does not return their memory: the process then holds the parts and
    the output together (measured: 6.3 GiB peak at N = 50,000 for a 2.85 GB result).
    A fixed threshold keeps them in mmapped chunks, released on free. No-op elsewhere.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _concat_freeing(parts: list, total: int, dtype) -> np.ndarray:
    """Concatenate and free the parts one by one: the untouched pages of the output
    are not resident yet, so the peak stays near one copy (np.concatenate holds two)."""
    out = np.empty(total, dtype=dtype)
    o = 0
    while parts:
        p = parts.pop(0)
        out[o : o + len(p)] = p
        o += len(p)
        del p
    return out


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
