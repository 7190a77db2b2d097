"""Rank metrics on a query x gallery distance matrix: ``(cmc, mAP, mINP)`` with the
semantics of Cross-Modal-Re-ID-baseline's ``eval_metrics.py`` (Ye et al.; the LLCM
variant from DEEN, Zhang & Wang, CVPR 2023), vectorised (one ``argsort`` for all
queries instead of a Python loop per query). Every function here takes *distances*;
the protocol entry points that take *features* are in :mod:`.protocols`.
"""

from __future__ import annotations

import numpy as np

from ..data.readers import (
    SYSU_CAMERA_LOCATIONS,
)


def _check_inputs(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be a 2-D (num_query, num_gallery) array, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    if num_q == 0:
        raise ValueError("distmat has no query rows (shape {})".format(distmat.shape))
    if num_g == 0:
        raise ValueError(f"empty gallery: distmat has shape {distmat.shape}")
    if not np.issubdtype(distmat.dtype, np.number):
        raise ValueError(f"distmat must be numeric, got dtype {distmat.dtype}")
    if np.isnan(distmat).any():
        raise ValueError(f"distmat contains {int(np.isnan(distmat).sum())} NaN values")
    if isinstance(max_rank, bool) or int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    q_pids = np.asarray(q_pids).reshape(-1)
    g_pids = np.asarray(g_pids).reshape(-1)
    if len(q_pids) != num_q:
        raise ValueError(f"q_pids has length {len(q_pids)}, expected num_query={num_q} (distmat {distmat.shape})")
    if len(g_pids) != num_g:
        raise ValueError(f"g_pids has length {len(g_pids)}, expected num_gallery={num_g} (distmat {distmat.shape})")
    if q_camids is not None:
        q_camids = np.asarray(q_camids).reshape(-1)
        if len(q_camids) != num_q:
            raise ValueError(f"q_camids has length {len(q_camids)}, expected num_query={num_q}")
    if g_camids is not None:
        g_camids = np.asarray(g_camids).reshape(-1)
        if len(g_camids) != num_g:
            raise ValueError(f"g_camids has length {len(g_camids)}, expected num_gallery={num_g}")
    return distmat, q_pids, g_pids, q_camids, g_camids


def _distinct_ids_before(before: np.ndarray, g_pids: np.ndarray) -> np.ndarray:
    """(Q, G) bool in gallery order -> (Q,) number of distinct identities marked."""
    uniq, inverse = np.unique(g_pids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(uniq)))
    return np.logical_or.reduceat(before[:, order], starts, axis=1).sum(axis=1)


def _per_query_argsort(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    removed: np.ndarray | None,
    unique_id_cmc: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query ``(num_pos, ap, inp, id_rank)`` from the full ``np.argsort`` ranking.

    Used for the rows where a positive ties with another kept entry, so that the tie
    order is exactly the one ``np.argsort(distmat, axis=1)`` gives.
    ``removed`` is (Q, G) bool in gallery order. ``id_rank`` is the 0-based rank of
    the query identity in the CMC sense (undefined, -1, for invalid queries).
    """
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1)
    matches = g_pids[indices] == q_pids[:, None]
    if removed is not None:
        keep = ~np.take_along_axis(removed, indices, axis=1)
        matches &= keep
        kept_pos = np.cumsum(keep, axis=1, dtype=np.int64)  # 1-based rank in the kept list
    else:
        kept_pos = np.broadcast_to(np.arange(1, num_g + 1, dtype=np.int64), (num_q, num_g))
    num_pos = matches.sum(axis=1)
    cum_matches = np.cumsum(matches, axis=1, dtype=np.int64)
    precision = np.divide(cum_matches, kept_pos, out=np.zeros((num_q, num_g)), where=matches)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = precision.sum(axis=1) / num_pos
        inp = num_pos / np.where(matches, kept_pos, 0).max(axis=1)
    first_col = np.argmax(matches, axis=1)  # ranked position of the first kept positive
    if unique_id_cmc:
        rank_of = np.empty_like(indices)
        np.put_along_axis(rank_of, indices, np.broadcast_to(np.arange(num_g), indices.shape), axis=1)
        before = rank_of < first_col[:, None]
        if removed is not None:
            before &= ~removed
        id_rank = _distinct_ids_before(before, g_pids)
    else:
        id_rank = kept_pos[np.arange(num_q), first_col] - 1
    id_rank = np.where(num_pos > 0, id_rank, -1)
    return num_pos, ap, inp, id_rank


def _rank_metrics(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    removed: np.ndarray | None,
    max_rank: int,
    unique_id_cmc: bool,
) -> tuple[np.ndarray, float, float]:
    """Vectorised core shared by the three protocols.

    The ranking is ``np.argsort(distmat, axis=1)``. For a positive that ties with no
    other kept entry its position in that ranking is the number of kept entries with a
    strictly smaller distance, whatever the sort algorithm; these counts come from one
    ``np.sort`` per row and a vectorised binary search, which avoids the (slower)
    argsort of the whole matrix. Rows where a positive does tie fall back to the
    argsort ranking itself (:func:`_per_query_argsort`).

    Args:
        distmat: (Q, G) float distances.
        q_pids: (Q,) query identities.
        g_pids: (G,) gallery identities.
        removed: (Q, G) bool in gallery order, True where the gallery entry is dropped
            for that query; None when nothing is dropped.
        max_rank: CMC length (already reduced to the gallery size).
        unique_id_cmc: CMC on the duplicate-free ranked identities (SYSU/LLCM) instead
            of the standard first-positive CMC (RegDB).
    """
    num_q, num_g = distmat.shape
    pos = g_pids[None, :] == q_pids[:, None]
    dist_kept = distmat.astype(np.float64, copy=False)
    if removed is not None:
        pos &= ~removed
        dist_kept = np.where(removed, np.inf, dist_kept)  # dropped entries sort last
    rows, cols = np.nonzero(pos)  # row-major: rows non-decreasing
    num_pos = np.bincount(rows, minlength=num_q)
    valid = num_pos > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "no valid query: no query identity has a (kept) positive in the gallery "
            f"({num_q} queries, {num_g} gallery entries)"
        )
    # kept entries strictly closer than / as close as each positive (binary search per row)
    srt = np.sort(dist_kept, axis=1)
    d_pos = dist_kept[rows, cols]
    n_kept = (~removed).sum(axis=1) if removed is not None else np.full(num_q, num_g)
    lo_l, hi_l = np.zeros(len(rows), dtype=np.int64), n_kept[rows].astype(np.int64)
    lo_r, hi_r = lo_l.copy(), hi_l.copy()
    for _ in range(int(np.ceil(np.log2(num_g + 1))) + 1):
        for lo, hi, strict in ((lo_l, hi_l, True), (lo_r, hi_r, False)):
            active = lo < hi
            mid = (lo + hi) // 2
            val = srt[rows, np.minimum(mid, num_g - 1)]
            go = active & ((val < d_pos) if strict else (val <= d_pos))
            stop = active & ~go
            lo[go] = mid[go] + 1
            hi[stop] = mid[stop]
    tied_rows = np.unique(rows[(lo_r - lo_l) > 1])
    kept_rank = lo_l + 1  # 1-based rank in the kept list

    # AP / INP from the positives' kept ranks, sorted within each row
    order = np.lexsort((kept_rank, rows))
    r_sorted, k_sorted = rows[order], kept_rank[order]
    row_start = np.concatenate([[0], np.cumsum(num_pos)])[:-1]
    ordinal = np.arange(len(rows)) - row_start[r_sorted] + 1
    ap = np.bincount(r_sorted, weights=ordinal / k_sorted, minlength=num_q)
    vrows = np.flatnonzero(valid)
    first = np.zeros(num_q, dtype=np.int64)
    last = np.ones(num_q, dtype=np.int64)
    first[vrows] = k_sorted[row_start[vrows]]
    last[vrows] = k_sorted[row_start[vrows] + num_pos[vrows] - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = ap / num_pos
    inp = num_pos / last
    if unique_id_cmc:
        d_first = np.full(num_q, -np.inf)  # distance of the first kept positive
        d_first[vrows] = np.minimum.reduceat(d_pos, row_start[vrows])
        before = dist_kept < d_first[:, None]  # kept entries strictly before the first positive
        id_rank = _distinct_ids_before(before, g_pids)
    else:
        id_rank = first - 1

    if len(tied_rows):
        sub_removed = removed[tied_rows] if removed is not None else None
        n2, ap2, inp2, id2 = _per_query_argsort(
            distmat[tied_rows], q_pids[tied_rows], g_pids, sub_removed, unique_id_cmc
        )
        ap[tied_rows], inp[tied_rows], id_rank[tied_rows] = ap2, inp2, id2

    id_rank = id_rank[valid]
    hits = np.bincount(np.minimum(id_rank, max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits) / num_valid
    return cmc.astype(np.float64), float(ap[valid].mean()), float(inp[valid].mean())


def eval_sysu(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01 evaluation (docs/protocols.md; Cross-Modal-Re-ID-baseline ``eval_sysu``).

    Args:
        distmat: (Q, G) float, smaller = more similar; ranked with ``np.argsort``.
        q_pids: (Q,) int query identities.
        g_pids: (G,) int gallery identities.
        q_camids: (Q,) int query cameras, 1-based (3 and 6 for infrared queries).
        g_camids: (G,) int gallery cameras, 1-based.
        max_rank: CMC length; reduced to G when the gallery is smaller.

    Returns:
        ``(cmc, mAP, mINP)``: cmc (max_rank,) float64 fractions of valid queries whose
        identity appears within the first r+1 *distinct* identities of the kept ranked
        list (gallery entries from camera 2 are dropped for camera-3 queries); mAP and
        mINP floats in [0, 1] averaged over valid queries (with at least one kept
        positive). Where a kept list holds fewer distinct identities than
        ``max_rank``, the curve stays at its last value (the baseline code would fail).

    Raises:
        ValueError: mismatched lengths, NaN distances, empty gallery, no valid query.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    max_rank = min(int(max_rank), distmat.shape[1])
    removed = (q_camids == 3)[:, None] & (g_camids == 2)[None, :]
    return _rank_metrics(distmat, q_pids, g_pids, removed, max_rank, unique_id_cmc=True)


def eval_sysu_official(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01 metrics of the dataset authors' own protocol (``evaluate_SYSU_MM01``).

    As :func:`eval_sysu` (``np.argsort`` ranking, CMC on the duplicate-free ranked
    identities over valid queries, AP on the kept list), except for the dropped entries:
    every gallery entry whose camera *location* equals the query's
    (:data:`~cmamlib.data.readers.SYSU_CAMERA_LOCATIONS`, ``[1, 2, 2, 4, 5, 6]`` for
    cams 1..6: cams 2 and 3 share a room). For infrared queries against a visible
    gallery this drops exactly what :func:`eval_sysu` drops (cam-2 entries for cam-3
    queries). mINP is not part of the authors' code; it is computed as in
    :func:`eval_sysu`.

    Args:
        distmat: (Q, G) float, smaller = more similar (the authors use Euclidean).
        q_pids, g_pids: (Q,), (G,) identities.
        q_camids, g_camids: (Q,), (G,) SYSU cameras 1..6.
        max_rank: CMC length; reduced to G when the gallery is smaller.

    Returns:
        ``(cmc, mAP, mINP)`` as :func:`eval_sysu`.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    max_rank = min(int(max_rank), distmat.shape[1])
    q_loc, g_loc = _sysu_locations(q_camids, "q_camids"), _sysu_locations(g_camids, "g_camids")
    removed = q_loc[:, None] == g_loc[None, :]
    return _rank_metrics(distmat, q_pids, g_pids, removed, max_rank, unique_id_cmc=True)


def _sysu_locations(camids: np.ndarray, name: str) -> np.ndarray:
    bad = sorted({int(c) for c in camids} - set(SYSU_CAMERA_LOCATIONS))
    if bad:
        raise ValueError(f"{name}: expected SYSU-MM01 cameras {sorted(SYSU_CAMERA_LOCATIONS)}, got {bad}")
    return np.array([SYSU_CAMERA_LOCATIONS[int(c)] for c in camids], dtype=np.int64)


def eval_llcm(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """LLCM evaluation (DEEN ``eval_llcm``): as :func:`eval_sysu`, but the dropped
    gallery entries are those with the query's identity *and* camera id.

    Args and returns as :func:`eval_sysu` (cmc on duplicate-free ranked identities).
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    max_rank = min(int(max_rank), distmat.shape[1])
    removed = (q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :])
    return _rank_metrics(distmat, q_pids, g_pids, removed, max_rank, unique_id_cmc=True)


def eval_regdb(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """RegDB (and SYSU-MM02) evaluation: standard CMC, nothing removed.

    Args:
        distmat: (Q, G) float, smaller = more similar; ranked with ``np.argsort``.
        q_pids: (Q,) int query identities.
        g_pids: (G,) int gallery identities.
        max_rank: CMC length; reduced to G when the gallery is smaller.

    Returns:
        ``(cmc, mAP, mINP)``; cmc[r] is the fraction of valid queries whose first
        positive is within the first r+1 entries.
    """
    distmat, q_pids, g_pids, _, _ = _check_inputs(distmat, q_pids, g_pids, None, None, max_rank)
    max_rank = min(int(max_rank), distmat.shape[1])
    return _rank_metrics(distmat, q_pids, g_pids, None, max_rank, unique_id_cmc=False)


def eval_market(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """Market-1501 / MSMT17 evaluation (torchreid ``eval_market1501``): gallery entries
    with the query's identity *and* camera are dropped; standard CMC (first kept
    positive, no duplicate removal); AP and INP over valid queries. Used for the
    source-domain (visible -> visible) diagnostic of stage 1.

    Args and returns as :func:`eval_sysu`, with the standard CMC of :func:`eval_regdb`.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    max_rank = min(int(max_rank), distmat.shape[1])
    removed = (q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :])
    return _rank_metrics(distmat, q_pids, g_pids, removed, max_rank, unique_id_cmc=False)
