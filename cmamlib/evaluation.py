"""Ranking evaluation for visible-infrared re-identification (SYSU-MM01, RegDB, LLCM).

Three metric functions take a query x gallery distance matrix and return
``(cmc, mAP, mINP)`` with exactly the semantics of the evaluation code that most
published VI-ReID numbers come from (Ye et al., Cross-Modal-Re-ID-baseline,
``eval_metrics.py``; the LLCM variant from Zhang & Wang, DEEN, CVPR 2023), written
vectorised instead of one Python loop per query:

- :func:`eval_sysu`: ``np.argsort`` ranking; for a query from camera 3 every gallery
  entry from camera 2 is dropped; the CMC curve is computed on the ranked gallery
  *identities with duplicates removed* (first occurrence kept) and summed over all
  queries, divided by the number of valid queries (queries with at least one kept
  positive); AP and INP are averaged over valid queries.
- :func:`eval_regdb`: standard CMC (first positive), nothing removed.
- :func:`eval_llcm`: as SYSU, but the dropped entries are those with the query's
  identity *and* camera.

mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook",
TPAMI 2021) is ``#positives / rank of the last positive``.

On top of them, feature-level helpers build the protocol galleries from
:class:`~cmamlib.data.records.Record` lists and average over trials:
:func:`sysu_gallery_indices` (docs/protocols.md: ``random.seed(trial)``, one
``random.choice`` per test identity and gallery camera from the path-sorted file
list), :func:`evaluate_sysu` (all-search and indoor, 10 trials),
:func:`evaluate_regdb` (the 10 splits, both directions) and :func:`evaluate_llcm`.
:func:`evaluate_sysu` also runs the SYSU-MM01 authors' own protocol
(``protocol="official"``: galleries from ``exp/rand_perm_cam.mat``, test ids from
``exp/test_id.mat``, Euclidean ranking, gallery entries at the query's camera location
dropped; :func:`sysu_official_gallery_indices`, :func:`eval_sysu_official`);
:func:`evaluate_sysu_mm02` runs SYSU-MM02 (visible -> infrared, then the reverse).
They return :class:`EvalResult` objects (per-trial values, mean, std,
``to_dict()`` for JSON). Distances are ``-q @ g.T`` on L2-normalised features (the
baseline's choice; it ranks exactly as the Euclidean distance does), computed in
chunks with torch.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch

from .data.readers import (
    SYSU_CAMERA_LOCATIONS,
    SYSU_OFFICIAL_FILES,
    SysuOfficialSplit,
    read_sysu_mm01_official,
)
from .data.records import DatasetError, Record, record_arrays

__all__ = [
    "EvalResult",
    "SYSU_GALLERY_CAMERAS",
    "eval_llcm",
    "eval_market",
    "eval_regdb",
    "eval_sysu",
    "eval_sysu_official",
    "evaluate_llcm",
    "evaluate_regdb",
    "evaluate_sysu",
    "evaluate_sysu_mm02",
    "pairwise_distance",
    "sample_gallery_indices",
    "sysu_gallery_indices",
    "sysu_official_gallery_indices",
]

#: The two SYSU-MM01 protocols of :func:`evaluate_sysu` (docs/protocols.md).
SYSU_PROTOCOLS: tuple[str, ...] = ("baseline", "official")

#: Visible gallery cameras of the SYSU-MM01 search modes (1-based camera ids).
SYSU_GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}

#: Ranks reported by :class:`EvalResult`.
REPORTED_RANKS: tuple[int, ...] = (1, 5, 10, 20)


# --------------------------------------------------------------------------------------
# metric functions on a distance matrix
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# galleries
# --------------------------------------------------------------------------------------


def sample_gallery_indices(
    records: Sequence[Record],
    cameras: Iterable[int],
    trial: int,
    shot: int = 1,
) -> list[int]:
    """Seeded random gallery of the SYSU-MM01 / LLCM protocols.

    ``random.seed(trial)``; for each identity in increasing order, for each camera in
    ``cameras`` order where that identity has images, ``random.choice`` of the file
    list sorted by path (``shot == 1``) or ``random.sample`` of ``shot`` files (fewer
    when the camera holds fewer images: reconstruction, the protocol text does not
    say). Python's global ``random`` state is saved and restored around the draw.

    Args:
        records: gallery candidates (all test images of the gallery modality).
        cameras: camera ids in protocol order.
        trial: seed.
        shot: images per identity and camera.

    Returns:
        Indices into ``records`` in protocol order.
    """
    if isinstance(shot, bool) or int(shot) != shot or shot < 1:
        raise ValueError(f"shot must be a positive integer, got {shot!r}")
    cameras = [int(c) for c in cameras]
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(int(r.pid), int(r.camid))].append((str(r.path), i))
    pids = sorted({pid for pid, _ in groups})
    state = random.getstate()
    try:
        random.seed(trial)
        chosen: list[int] = []
        for pid in pids:
            for cam in cameras:
                files = groups.get((pid, cam))
                if not files:
                    continue
                files = sorted(files)
                if shot == 1:
                    chosen.append(random.choice(files)[1])
                else:
                    chosen.extend(f[1] for f in random.sample(files, min(int(shot), len(files))))
    finally:
        random.setstate(state)
    return chosen


def sysu_gallery_indices(
    gallery_candidate_records: Sequence[Record],
    mode: str = "all",
    trial: int = 0,
    shot: int = 1,
) -> list[int]:
    """SYSU-MM01 gallery of one trial (docs/protocols.md, seeded-random baseline protocol).

    Args:
        gallery_candidate_records: every visible test image (cams 1, 2, 4, 5, 1-based
            ``camid``), in any order.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        trial: trial number, used as the ``random.seed``.
        shot: 1 (single-shot, ``random.choice``) or 10 (multi-shot, ``random.sample``).

    Returns:
        Indices into ``gallery_candidate_records``, in protocol order (identity, then
        camera).
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    return sample_gallery_indices(gallery_candidate_records, SYSU_GALLERY_CAMERAS[mode], trial, shot)


def sysu_official_gallery_indices(
    gallery_candidate_records: Sequence[Record],
    split: SysuOfficialSplit,
    mode: str = "all",
    trial: int = 0,
    shot: int = 1,
) -> list[int]:
    """SYSU-MM01 gallery of one trial in the dataset authors' own protocol.

    For each gallery camera of ``mode`` in order, for each test id in ``test_id.mat``
    order: the images of that camera and id in sorted file order, indexed by the first
    ``shot`` entries of row ``trial`` of ``rand_perm_cam{cam}{id}`` (1-based), as the
    authors' ``get_testing_set``. Entries whose permutation is empty are skipped.

    Args:
        gallery_candidate_records: every visible test image of the mode's cameras
            (:func:`~cmamlib.data.readers.sysu_query_gallery`), any order.
        split: :func:`~cmamlib.data.readers.read_sysu_mm01_official` of the same root.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (1, 2).
        trial: 0-based trial (row of the permutation matrices).
        shot: 1 (single-shot) or 10 (multi-shot).

    Returns:
        Indices into ``gallery_candidate_records``, camera-major as the authors' code.

    Raises:
        DatasetError: the images of a (camera, id) do not number what its permutation
            permutes (the .mat file and the tree disagree).
        ValueError: bad mode, trial beyond the file's rows, shot < 1.
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    if isinstance(shot, bool) or int(shot) != shot or shot < 1:
        raise ValueError(f"shot must be a positive integer, got {shot!r}")
    if not 0 <= int(trial) < split.num_trials:
        raise ValueError(f"trial={trial}: the official split has {split.num_trials} trials (0..{split.num_trials - 1})")
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    for i, r in enumerate(gallery_candidate_records):
        groups[(int(r.pid), int(r.camid))].append((str(r.path), i))
    perm_file = os.path.join(split.root, *SYSU_OFFICIAL_FILES[0].split("/"))
    chosen: list[int] = []
    for cam in SYSU_GALLERY_CAMERAS[mode]:
        for pid in split.test_ids:
            files = sorted(groups.get((pid, cam), []))
            perm = split.rand_perm.get((cam, pid))
            n = 0 if perm is None else perm.shape[1]
            if n != len(files):
                raise DatasetError(
                    f"{perm_file}: rand_perm_cam{{{cam}}}{{{pid}}} permutes {n} images, but the gallery "
                    f"candidates hold {len(files)} images of id {pid} in cam{cam} "
                    f"({os.path.join(split.root, f'cam{cam}', f'{pid:04d}')}); the .mat file and the "
                    f"tree disagree"
                )
            if perm is None:
                continue
            chosen.extend(files[j - 1][1] for j in perm[int(trial), : int(shot)])
    return chosen


def _infer_sysu_root(records: Sequence[Record]) -> str:
    """SYSU-MM01 root of records read by ``read_sysu_mm01`` (``ROOT/camC/PPPP/file``)."""
    roots = {str(Path(r.path).parents[2]) for r in records}
    if len(roots) != 1:
        raise ValueError(
            f"protocol='official': cannot infer the SYSU-MM01 root from the records (they lie under "
            f"{sorted(roots)[:3]}); pass root="
        )
    return roots.pop()


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


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Metrics of one protocol over its trials (or RegDB splits).

    Attributes:
        protocol: e.g. ``"sysu/all"``, ``"regdb/visible_to_thermal"``.
        cmc: per trial, the CMC curve (fractions in [0, 1]).
        mAP: per trial, mean average precision (fraction).
        mINP: per trial, mean inverse negative penalty (fraction).
        info: free-form JSON-serialisable details (shot, number of queries...).
    """

    protocol: str
    cmc: list[list[float]] = field(default_factory=list)
    mAP: list[float] = field(default_factory=list)
    mINP: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add_trial(self, cmc: np.ndarray, mAP: float, mINP: float) -> None:
        """Append one trial's ``(cmc, mAP, mINP)`` as returned by the ``eval_*`` functions."""
        self.cmc.append([float(v) for v in np.asarray(cmc).reshape(-1)])
        self.mAP.append(float(mAP))
        self.mINP.append(float(mINP))

    @property
    def num_trials(self) -> int:
        return len(self.mAP)

    def rank(self, k: int) -> list[float]:
        """Per-trial rank-k accuracy; beyond a short curve (small gallery) its last value."""
        return [c[min(k, len(c)) - 1] for c in self.cmc]

    def per_trial(self) -> list[dict[str, float]]:
        rows = []
        for t in range(self.num_trials):
            row = {f"R{k}": self.rank(k)[t] for k in REPORTED_RANKS}
            row.update(mAP=self.mAP[t], mINP=self.mINP[t])
            rows.append(row)
        return rows

    def _stat(self, fn) -> dict[str, float]:
        rows = self.per_trial()
        if not rows:
            return {}
        return {k: float(fn([r[k] for r in rows])) for k in rows[0]}

    @property
    def mean(self) -> dict[str, float]:
        """Mean over trials of R1, R5, R10, R20, mAP, mINP (fractions)."""
        return self._stat(np.mean)

    @property
    def std(self) -> dict[str, float]:
        """Population standard deviation over trials (``np.std``, ddof 0)."""
        return self._stat(np.std)

    @property
    def r1(self) -> float:
        return self.mean["R1"]

    @property
    def map(self) -> float:
        return self.mean["mAP"]

    @property
    def minp(self) -> float:
        return self.mean["mINP"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: mean, std, per-trial rows, mean CMC curve."""
        cmc_mean = (
            np.mean(np.asarray(self.cmc), axis=0).tolist() if self.cmc and len({len(c) for c in self.cmc}) == 1 else []
        )
        return {
            "protocol": self.protocol,
            "num_trials": self.num_trials,
            "mean": self.mean,
            "std": self.std,
            "per_trial": self.per_trial(),
            "cmc_mean": [float(v) for v in cmc_mean],
            "info": dict(self.info),
        }

    def summary(self) -> str:
        m = self.mean
        return (
            f"{self.protocol}: R1 {m['R1']:.2%} R5 {m['R5']:.2%} R10 {m['R10']:.2%} R20 {m['R20']:.2%} "
            f"mAP {m['mAP']:.2%} mINP {m['mINP']:.2%} ({self.num_trials} trials)"
        )


# --------------------------------------------------------------------------------------
# feature-level helpers
# --------------------------------------------------------------------------------------


def _check_records(feats: Any, records: Sequence[Record], name: str) -> None:
    n = feats.shape[0]
    if n != len(records):
        raise ValueError(f"{name}: {n} feature rows but {len(records)} records")
    if n == 0:
        raise ValueError(f"{name}: no records")


def evaluate_sysu(
    query_feats: np.ndarray | torch.Tensor,
    query_records: Sequence[Record],
    gallery_feats: np.ndarray | torch.Tensor,
    gallery_records: Sequence[Record],
    modes: Sequence[str] = ("all", "indoor"),
    trials: int = 10,
    shot: int = 1,
    max_rank: int = 20,
    normalize: bool = True,
    protocol: str = "baseline",
    root: Union[str, "os.PathLike[str]", SysuOfficialSplit, None] = None,
) -> dict[str, EvalResult]:
    """SYSU-MM01 infrared -> visible evaluation, in one of the two protocols.

    ``protocol="baseline"`` (default; most published unsupervised results): each trial's
    gallery is the seeded-random draw of :func:`sysu_gallery_indices`, distances
    ``-q @ g.T``, metrics :func:`eval_sysu`; result names ``"sysu/<mode>"``.
    ``protocol="official"`` (the dataset authors' code, which the method's authors
    use): the gallery of trial t comes from ``exp/rand_perm_cam.mat``
    (:func:`sysu_official_gallery_indices`), test ids from ``exp/test_id.mat``,
    Euclidean distances, metrics :func:`eval_sysu_official`; result names
    ``"sysu-official/<mode>"``. Either way ``info["protocol"]`` names it.

    Args:
        query_feats: (Q, D) features of every infrared test image (cams 3, 6).
        query_records: the Q query records (1-based ``camid``).
        gallery_feats: (G, D) features of every visible test image (gallery candidates).
        gallery_records: the G candidate records; each trial's gallery is drawn from
            them by :func:`sysu_gallery_indices`.
        modes: any of ``"all"``, ``"indoor"``.
        trials: number of seeded trials (seeds 0..trials-1).
        shot: 1 (single-shot) or 10 (multi-shot).
        max_rank: CMC length.
        normalize: L2-normalise features before computing distances.
        protocol: ``"baseline"`` or ``"official"`` (docs/protocols.md).
        root: official protocol only: the SYSU-MM01 folder holding ``exp/*.mat`` (or an
            already read :class:`~cmamlib.data.readers.SysuOfficialSplit`); default: the
            root the gallery records were read from (``ROOT/camC/PPPP/file``).

    Returns:
        ``{mode: EvalResult}``.

    Raises:
        DatasetError: official protocol and ``exp/rand_perm_cam.mat`` or
            ``exp/test_id.mat`` missing (the message names the file), or the records
            hold ids absent from ``test_id.mat``, or the tree and the .mat disagree.
    """
    if protocol not in SYSU_PROTOCOLS:
        raise ValueError(f"protocol must be one of {SYSU_PROTOCOLS}, got {protocol!r}")
    _check_records(query_feats, query_records, "query")
    _check_records(gallery_feats, gallery_records, "gallery")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    q_pids, q_cams, _ = record_arrays(query_records)
    g_pids, g_cams, _ = record_arrays(gallery_records)
    q = _as_float_tensor(query_feats, "query_feats")
    g = _as_float_tensor(gallery_feats, "gallery_feats")
    split: SysuOfficialSplit | None = None
    if protocol == "official":
        if isinstance(root, SysuOfficialSplit):
            split = root
        else:
            split = read_sysu_mm01_official(_infer_sysu_root(gallery_records) if root is None else root)
        if trials > split.num_trials:
            raise ValueError(f"trials={trials}: the official split of {split.root} has {split.num_trials} trials")
        extra = sorted(({int(p) for p in q_pids} | {int(p) for p in g_pids}) - set(split.test_ids))
        if extra:
            raise DatasetError(
                f"{os.path.join(split.root, *SYSU_OFFICIAL_FILES[1].split('/'))}: expected every query and "
                f"gallery id among its {len(split.test_ids)} test ids; ids {extra[:10]} are not"
            )
    out: dict[str, EvalResult] = {}
    for mode in modes:
        if split is None:
            info = {"protocol": "baseline", "shot": int(shot), "num_query": len(query_records), "metric": "neg_dot"}
            res = EvalResult(f"sysu/{mode}", info=info)
        else:
            info = {
                "protocol": "official",
                "shot": int(shot),
                "num_query": len(query_records),
                "metric": "euclidean",
                "files": [os.path.join(split.root, *f.split("/")) for f in SYSU_OFFICIAL_FILES],
            }
            res = EvalResult(f"sysu-official/{mode}", info=info)
        for t in range(trials):
            if split is None:
                idx = np.asarray(sysu_gallery_indices(gallery_records, mode=mode, trial=t, shot=shot), dtype=np.int64)
            else:
                idx = np.asarray(sysu_official_gallery_indices(gallery_records, split, mode, t, shot), dtype=np.int64)
            if len(idx) == 0:
                raise ValueError(
                    f"empty SYSU gallery for mode {mode!r}, trial {t}: no "
                    f"candidate in cameras {SYSU_GALLERY_CAMERAS[mode]}"
                )
            if split is None:
                dist = pairwise_distance(q, g[idx], normalize=normalize)
                res.add_trial(*eval_sysu(dist, q_pids, g_pids[idx], q_cams, g_cams[idx], max_rank=max_rank))
            else:
                dist = _cdist(q, g[idx], normalize)
                res.add_trial(*eval_sysu_official(dist, q_pids, g_pids[idx], q_cams, g_cams[idx], max_rank=max_rank))
        res.info["num_gallery"] = int(len(idx))
        out[mode] = res
    return out


def evaluate_llcm(
    query_feats: np.ndarray | torch.Tensor,
    query_records: Sequence[Record],
    gallery_feats: np.ndarray | torch.Tensor,
    gallery_records: Sequence[Record],
    trials: int = 10,
    shot: int = 1,
    cameras: Sequence[int] | None = None,
    max_rank: int = 20,
    normalize: bool = True,
    name: str | None = None,
) -> EvalResult:
    """LLCM evaluation of one direction (DEEN protocol, 10 seeded gallery trials).

    Every query record is used; the gallery of trial t is one ``random.choice`` per
    identity and camera of the gallery candidates (``random.seed(t)``, identities in
    increasing order, cameras in increasing order unless ``cameras`` is given), as
    DEEN's ``process_gallery_llcm``. Call twice with the modalities swapped for the
    two directions (infrared -> visible and visible -> infrared).

    Args:
        query_feats: (Q, D); query_records: Q records.
        gallery_feats: (G, D) features of every test image of the other modality;
            gallery_records: G candidate records.
        trials, shot, max_rank, normalize: as :func:`evaluate_sysu`.
        cameras: gallery camera order; default sorted camera ids of the candidates.
        name: protocol name; default ``"llcm/<query modality>_to_<gallery modality>"``.
    """
    _check_records(query_feats, query_records, "query")
    _check_records(gallery_feats, gallery_records, "gallery")
    q_pids, q_cams, _ = record_arrays(query_records)
    g_pids, g_cams, _ = record_arrays(gallery_records)
    cams = sorted({int(c) for c in g_cams}) if cameras is None else [int(c) for c in cameras]
    q = _as_float_tensor(query_feats, "query_feats")
    g = _as_float_tensor(gallery_feats, "gallery_feats")
    name = name or f"llcm/{query_records[0].modality}_to_{gallery_records[0].modality}"
    res = EvalResult(name, info={"shot": int(shot), "num_query": len(query_records), "metric": "neg_dot"})
    for t in range(trials):
        idx = np.asarray(sample_gallery_indices(gallery_records, cams, t, shot), dtype=np.int64)
        if len(idx) == 0:
            raise ValueError(f"empty LLCM gallery for trial {t}: no candidate in cameras {cams}")
        dist = pairwise_distance(q, g[idx], normalize=normalize)
        res.add_trial(*eval_llcm(dist, q_pids, g_pids[idx], q_cams, g_cams[idx], max_rank=max_rank))
    return res


def evaluate_regdb(
    visible_feats: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    visible_records: Sequence[Record] | Sequence[Sequence[Record]],
    thermal_feats: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    thermal_records: Sequence[Record] | Sequence[Sequence[Record]],
    directions: Sequence[str] = ("visible_to_thermal", "thermal_to_visible"),
    max_rank: int = 20,
    normalize: bool = True,
) -> dict[str, EvalResult]:
    """RegDB evaluation over splits, both directions; the whole other modality is the
    gallery, standard CMC (:func:`eval_regdb`).

    Args:
        visible_feats: (Nv, D) test features of one split, or a list of them, one per
            split (split i's model gives split i's features).
        visible_records: the matching records (a list of lists for several splits).
        thermal_feats, thermal_records: the same for the thermal test images.
        directions: any of ``"visible_to_thermal"``, ``"thermal_to_visible"``.

    Returns:
        ``{direction: EvalResult}``, one trial per split.
    """

    def as_splits(feats, records):
        if isinstance(feats, (np.ndarray, torch.Tensor)):
            return [feats], [records]
        return list(feats), list(records)

    v_feats, v_recs = as_splits(visible_feats, visible_records)
    t_feats, t_recs = as_splits(thermal_feats, thermal_records)
    if not (len(v_feats) == len(v_recs) == len(t_feats) == len(t_recs)):
        raise ValueError(
            f"number of splits differ: visible feats {len(v_feats)}, visible records {len(v_recs)}, "
            f"thermal feats {len(t_feats)}, thermal records {len(t_recs)}"
        )
    for d in directions:
        if d not in ("visible_to_thermal", "thermal_to_visible"):
            raise ValueError(f"direction must be 'visible_to_thermal' or 'thermal_to_visible', got {d!r}")
    out = {d: EvalResult(f"regdb/{d}", info={"metric": "neg_dot"}) for d in directions}
    for s, (vf, vr, tf, tr) in enumerate(zip(v_feats, v_recs, t_feats, t_recs)):
        _check_records(vf, vr, f"split {s} visible")
        _check_records(tf, tr, f"split {s} thermal")
        v_pids = record_arrays(vr)[0]
        t_pids = record_arrays(tr)[0]
        dist = pairwise_distance(vf, tf, normalize=normalize)  # (Nv, Nt)
        for d in directions:
            if d == "visible_to_thermal":
                res = eval_regdb(dist, v_pids, t_pids, max_rank=max_rank)
            else:
                res = eval_regdb(np.ascontiguousarray(dist.T), t_pids, v_pids, max_rank=max_rank)
            out[d].add_trial(*res)
    return out


def evaluate_sysu_mm02(
    visible_feats: np.ndarray | torch.Tensor,
    visible_records: Sequence[Record],
    infrared_feats: np.ndarray | torch.Tensor,
    infrared_records: Sequence[Record],
    directions: Sequence[str] = ("visible_to_infrared", "infrared_to_visible"),
    max_rank: int = 20,
    normalize: bool = True,
) -> dict[str, EvalResult]:
    """SYSU-MM02 evaluation (docs/protocols.md): query ``test_rgb.txt`` -> gallery
    ``test_ir.txt`` first, then the reverse; the whole other list is the gallery,
    standard CMC with nothing removed (:func:`eval_regdb`), one trial.

    Args:
        visible_feats: (Nv, D) features of the visible test records
            (``read_sysu_mm02(root, "test")`` with modality visible).
        visible_records: those Nv records.
        infrared_feats, infrared_records: the same for the infrared test records.
        directions: any of ``"visible_to_infrared"``, ``"infrared_to_visible"``.

    Returns:
        ``{direction: EvalResult}`` named ``"sysu-mm02/<direction>"``.
    """
    for d in directions:
        if d not in ("visible_to_infrared", "infrared_to_visible"):
            raise ValueError(f"direction must be 'visible_to_infrared' or 'infrared_to_visible', got {d!r}")
    _check_records(visible_feats, visible_records, "visible")
    _check_records(infrared_feats, infrared_records, "infrared")
    v_pids = record_arrays(visible_records)[0]
    i_pids = record_arrays(infrared_records)[0]
    dist = pairwise_distance(visible_feats, infrared_feats, normalize=normalize)  # (Nv, Ni)
    out = {}
    for d in directions:
        res = EvalResult(
            f"sysu-mm02/{d}",
            info={
                "metric": "neg_dot",
                "num_query": len(visible_records if d.startswith("visible") else infrared_records),
            },
        )
        if d == "visible_to_infrared":
            res.add_trial(*eval_regdb(dist, v_pids, i_pids, max_rank=max_rank))
        else:
            res.add_trial(*eval_regdb(np.ascontiguousarray(dist.T), i_pids, v_pids, max_rank=max_rank))
        out[d] = res
    return out
