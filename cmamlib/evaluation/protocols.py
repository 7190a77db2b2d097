"""Protocol entry points on *features* and :class:`~cmamlib.data.records.Record` lists
(SYSU-MM01 all / indoor search over trials, RegDB both directions, LLCM, SYSU-MM02):
each builds its galleries (:mod:`.galleries`), ranks (:mod:`.distances`,
:mod:`.ranking`) and returns :class:`~.results.EvalResult` objects."""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..data.readers import (
    SYSU_OFFICIAL_FILES,
    SysuOfficialSplit,
    read_sysu_mm01_official,
)
from ..data.records import DatasetError, Record, record_arrays
from .constants import SYSU_GALLERY_CAMERAS, SYSU_PROTOCOLS
from .distances import _as_float_tensor, _cdist, pairwise_distance
from .galleries import _infer_sysu_root, sample_gallery_indices, sysu_gallery_indices, sysu_official_gallery_indices
from .ranking import eval_llcm, eval_regdb, eval_sysu, eval_sysu_official
from .results import EvalResult


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
