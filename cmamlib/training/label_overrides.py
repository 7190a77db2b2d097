"""Human corrections of stage 2's pseudo labels (``label_overrides``, what the
pseudo-label inspector exports): their check and how they apply to one epoch's
per-modality clusters and cross-modality pairs."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: Keys of a ``label_overrides`` dict (see :func:`apply_overrides`).
OVERRIDE_KEYS = ("noise_clusters", "reject_pairs", "force_pairs", "epochs")


# --------------------------------------------------------------------------------------
# label overrides
# --------------------------------------------------------------------------------------


def _id_list(v: Any, what: str) -> list[int]:
    if v is None:
        return []
    out = []
    for x in v:
        if isinstance(x, bool) or int(x) != x or int(x) < 0:
            raise ValueError(f"label_overrides {what}: {x!r} is not a cluster id (non-negative integer)")
        out.append(int(x))
    return out


def _pair_list(v: Any, what: str) -> list[tuple[int, int]]:
    if v is None:
        return []
    out = []
    for p in v:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ValueError(f"label_overrides {what}: {p!r} is not a [visible_id, infrared_id] pair")
        a, b = _id_list(p, what)
        out.append((a, b))
    return out


def check_overrides(overrides: Mapping[str, Any] | None) -> None:
    """Raise ``ValueError`` naming any unknown key of a ``label_overrides`` dict."""
    if overrides is None:
        return
    if not isinstance(overrides, Mapping):
        raise ValueError(f"label_overrides must be a dict, got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(f"label_overrides: unknown keys {unknown}; known keys: {list(OVERRIDE_KEYS)}")
    nc = overrides.get("noise_clusters") or {}
    if not isinstance(nc, Mapping):
        raise ValueError(
            f"label_overrides noise_clusters must be a dict {{'visible': [...], 'infrared': [...]}}, got {nc!r}"
        )
    bad = sorted(set(nc) - {"visible", "infrared"})
    if bad:
        raise ValueError(f"label_overrides noise_clusters: unknown modalities {bad}; expected 'visible' / 'infrared'")


def apply_overrides(
    vis_labels: np.ndarray,
    ir_labels: np.ndarray,
    pairs: np.ndarray,
    overrides: Mapping[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply user corrections to one epoch's per-modality clustering and matching.

    ``overrides`` (e.g. loaded from JSON; ids are the per-modality cluster ids of this
    clustering, as in ``vis_labels`` / ``ir_labels``)::

        {"noise_clusters": {"visible": [3], "infrared": [0, 7]},
         "reject_pairs": [[vis_id, ir_id], ...],
         "force_pairs": [[vis_id, ir_id], ...]}

    Applied in this order: flagged clusters become noise (``-1``, dropped from training)
    and leave every pair; rejected pairs are removed (their clusters stay, unmatched
    unless in another pair); a forced pair replaces every pair holding either of its
    clusters and is added. Every key is optional; ``"epochs"`` (which epochs a run applies
    the dict to) is accepted and ignored here.

    Args:
        vis_labels: ``(Nv,)`` int visible cluster labels, -1 noise.
        ir_labels: ``(Ni,)`` int infrared cluster labels, -1 noise.
        pairs: ``(M, 2)`` int ``(vis_id, ir_id)`` matched pairs.
        overrides: the dict above, or None (nothing changes).

    Returns:
        ``(vis_labels, ir_labels, pairs)``: new arrays (inputs untouched); pairs unique,
        sorted by visible then infrared id, ``(M', 2)`` int64.

    Raises:
        ValueError: an unknown key (named), a cluster id absent from the labels, a
            rejected pair that is not matched, or a forced pair naming a cluster flagged
            as noise.
    """
    vl = np.asarray(vis_labels, dtype=np.int64).copy()
    il = np.asarray(ir_labels, dtype=np.int64).copy()
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if overrides is None:
        return vl, il, _sorted_pairs(p)
    check_overrides(overrides)
    ids = {"visible": set(np.unique(vl[vl >= 0]).tolist()), "infrared": set(np.unique(il[il >= 0]).tolist())}

    def _check(side: str, cid: int, what: str) -> None:
        if cid not in ids[side]:
            have = sorted(ids[side])
            span = f"ids {have[0]}..{have[-1]}" if have else "none"
            raise ValueError(
                f"label_overrides {what}: {side} cluster {cid} does not exist in this clustering "
                f"({len(have)} {side} clusters, {span})"
            )

    pair_set = {(int(a), int(b)) for a, b in p}
    nc = overrides.get("noise_clusters") or {}
    noise = {side: _id_list(nc.get(side), f"noise_clusters[{side!r}]") for side in ("visible", "infrared")}
    for side, lst in noise.items():
        for cid in lst:
            _check(side, cid, f"noise_clusters[{side!r}]")
    if noise["visible"]:
        vl[np.isin(vl, noise["visible"])] = -1
    if noise["infrared"]:
        il[np.isin(il, noise["infrared"])] = -1
    nv, ni = set(noise["visible"]), set(noise["infrared"])
    pair_set = {(a, b) for a, b in pair_set if a not in nv and b not in ni}

    for a, b in _pair_list(overrides.get("reject_pairs"), "reject_pairs"):
        _check("visible", a, "reject_pairs")
        _check("infrared", b, "reject_pairs")
        if (a, b) not in pair_set:
            raise ValueError(f"label_overrides reject_pairs: [{a}, {b}] is not a matched pair of this epoch")
        pair_set.discard((a, b))

    for a, b in _pair_list(overrides.get("force_pairs"), "force_pairs"):
        _check("visible", a, "force_pairs")
        _check("infrared", b, "force_pairs")
        if a in nv or b in ni:
            raise ValueError(
                f"label_overrides force_pairs: [{a}, {b}] names a cluster that noise_clusters flags as noise"
            )
        pair_set = {(x, y) for x, y in pair_set if x != a and y != b}
        pair_set.add((a, b))
    out = np.array(sorted(pair_set), dtype=np.int64).reshape(-1, 2)
    return vl, il, out


def _sorted_pairs(p: np.ndarray) -> np.ndarray:
    if len(p) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.unique(p.astype(np.int64), axis=0)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def _overrides_apply(overrides: Mapping[str, Any] | None, epoch: int) -> bool:
    if not overrides:
        return False
    ep = overrides.get("epochs")
    return ep is None or epoch in {int(e) for e in ep}
