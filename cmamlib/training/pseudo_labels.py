"""Stage 2's pseudo labels of one epoch: the features of every target image, per-modality
clustering (Jaccard + DBSCAN, or k-means in the second phase), the bipartite
cross-modality matching and the shared label space (:func:`cluster_and_match`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clustering import camera_centre, cluster_majority, pseudo_labels
from ..labeling import cluster_centroids, match_clusters, unify_labels
from .label_overrides import _overrides_apply, apply_overrides, check_overrides
from .loop import epoch_features, fuse
from .selftrain_config import SelfTrainConfig

# --------------------------------------------------------------------------------------
# pseudo labels of one epoch
# --------------------------------------------------------------------------------------


def _majority(labels: np.ndarray, true_ids: np.ndarray) -> dict[int, int]:
    """Majority true identity of every cluster id >= 0 (diagnostics only)."""
    return {c: major for c, (major, _, _) in cluster_majority(labels, true_ids).items()}


def pair_accuracy(
    pairs: np.ndarray, vis_labels: np.ndarray, ir_labels: np.ndarray, vis_true: np.ndarray, ir_true: np.ndarray
) -> float:
    """Fraction of pairs whose visible and infrared clusters have the same majority
    true identity (diagnostics only); NaN without pairs."""
    if len(pairs) == 0:
        return float("nan")
    mv, mi = _majority(vis_labels, vis_true), _majority(ir_labels, ir_true)
    ok = [mv[int(a)] == mi[int(b)] for a, b in pairs]
    return float(np.mean(ok))


def _kmeans(x: torch.Tensor, k: int, seed: int) -> np.ndarray:
    """Spherical k-means labels: sklearn KMeans on the L2-normalised rows (Euclidean
    k-means on the unit sphere, the usual approximation of cosine k-means)."""
    from sklearn.cluster import KMeans

    z = F.normalize(x.float(), dim=1).numpy().astype(np.float64)
    k = max(1, min(int(k), len(z)))
    return KMeans(n_clusters=k, n_init=3, random_state=int(seed)).fit_predict(z).astype(np.int64)


def _cluster(
    x: torch.Tensor, cfg: SelfTrainConfig, kmeans_k: int | None, seed: int, modality: str = "visible"
) -> np.ndarray:
    """DBSCAN with ``modality``'s parameters (``kmeans_k`` None) or k-means labels of
    already prepared features."""
    if kmeans_k is None:
        return pseudo_labels(x, *cfg.dbscan_params(modality), knn_backend=cfg.knn_backend)
    return _kmeans(x, kmeans_k, seed)


@dataclass
class EpochLabels:
    """Pseudo labels of one stage-2 epoch in ``cluster_mode="per_modality"``
    (:func:`cluster_and_match`): what the training loop of :func:`run_selftrain` trains on.

    Cluster ids are **per modality**: visible cluster ``3`` and infrared cluster ``3`` are
    unrelated until a pair links them. These ids are the ones a ``label_overrides`` dict
    names (:func:`apply_overrides`).

    Attributes:
        features: ``(N, D)`` float32, L2-normalised: the features that were clustered and
            matched (fused, camera-centred when ``camera_centering``), record order.
        is_ir: ``(N,)`` bool, True for infrared records.
        raw_vis_labels / raw_ir_labels: ``(Nv,)`` / ``(Ni,)`` int64 cluster ids of the
            visible / infrared records (in record order within the modality, i.e.
            ``vis_idx`` / ``ir_idx``), ``-1`` noise, as the clustering found them.
        raw_pairs: ``(M0, 2)`` int64 ``(visible_id, infrared_id)`` pairs of the bipartite
            matching (:func:`cmamlib.labeling.match_clusters`), sorted.
        vis_labels / ir_labels / pairs: the same after ``label_overrides`` (identical to
            the raw ones when no override applies to this epoch).
        similarity: ``(M,)`` float64 cosine similarity of the two cluster centroids of
            every row of ``pairs``.
        labels: ``(N,)`` int64 shared cross-modality training labels
            (:func:`cmamlib.labeling.unify_labels` of the corrected labels and pairs;
            unmatched clusters keep their own label), ``-1`` noise (not trained on).
        overrides_applied: whether ``label_overrides`` applied to this epoch.
    """

    features: torch.Tensor
    is_ir: np.ndarray
    raw_vis_labels: np.ndarray
    raw_ir_labels: np.ndarray
    raw_pairs: np.ndarray
    vis_labels: np.ndarray
    ir_labels: np.ndarray
    pairs: np.ndarray
    similarity: np.ndarray
    labels: np.ndarray
    overrides_applied: bool = False

    @property
    def vis_idx(self) -> np.ndarray:
        """``(Nv,)`` record indices of the visible images."""
        return np.flatnonzero(~self.is_ir)

    @property
    def ir_idx(self) -> np.ndarray:
        """``(Ni,)`` record indices of the infrared images."""
        return np.flatnonzero(self.is_ir)

    def modality_labels(self, raw: bool = True) -> np.ndarray:
        """``(N,)`` int64 per-image **per-modality** cluster id in record order (a
        visible image holds a visible cluster id, an infrared image an infrared one),
        ``-1`` noise: the ``labels`` argument of
        :class:`cmamlib.widgets.PseudoLabelInspector`. ``raw``: before overrides."""
        out = np.full(len(self.is_ir), -1, dtype=np.int64)
        out[self.vis_idx] = self.raw_vis_labels if raw else self.vis_labels
        out[self.ir_idx] = self.raw_ir_labels if raw else self.ir_labels
        return out


def _pair_similarity(features: torch.Tensor, vis_idx, ir_idx, vis_lab, ir_lab, pairs: np.ndarray) -> np.ndarray:
    """Centroid cosine similarity of every ``(visible_id, infrared_id)`` pair."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    vc, vids = cluster_centroids(features[vis_idx], vis_lab)
    ic, iids = cluster_centroids(features[ir_idx], ir_lab)
    vc = F.normalize(vc.double(), dim=1).numpy()
    ic = F.normalize(ic.double(), dim=1).numpy()
    rv = {int(c): k for k, c in enumerate(np.asarray(vids))}
    ri = {int(c): k for k, c in enumerate(np.asarray(iids))}
    return np.array([float(vc[rv[int(a)]] @ ic[ri[int(b)]]) for a, b in pairs], dtype=np.float64)


def match_modalities(
    x_vis: torch.Tensor, x_ir: torch.Tensor, vis_labels: np.ndarray, ir_labels: np.ndarray, cfg: SelfTrainConfig
) -> np.ndarray:
    """Bipartite matching of the visible and infrared cluster centroids
    (:func:`cmamlib.labeling.match_clusters` with ``cfg.match_cost``,
    ``cfg.match_unequal``, ``cfg.match_threshold``, ``cfg.ward_space``; the cluster sizes
    weight a merged group's centroid with ``ward_space="raw"``).

    Args:
        x_vis / x_ir: ``(Nv, D)`` / ``(Ni, D)`` features of each modality's records.
        vis_labels / ir_labels: ``(Nv,)`` / ``(Ni,)`` cluster ids, ``-1`` noise.

    Returns:
        ``(M, 2)`` int64 ``(visible_id, infrared_id)`` pairs.
    """
    vc, vids = cluster_centroids(x_vis, vis_labels)
    ic, iids = cluster_centroids(x_ir, ir_labels)
    vn = np.unique(np.asarray(vis_labels)[np.asarray(vis_labels) >= 0], return_counts=True)[1]
    inn = np.unique(np.asarray(ir_labels)[np.asarray(ir_labels) >= 0], return_counts=True)[1]
    m = match_clusters(
        vc, ic, cfg.match_cost, cfg.match_unequal, cfg.match_threshold, cfg.ward_space, vis_counts=vn, ir_counts=inn
    )
    if not m.num_pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.stack([np.asarray(vids)[m.pairs[:, 0]], np.asarray(iids)[m.pairs[:, 1]]], 1).astype(np.int64)


def shared_labels(vis_labels: np.ndarray, ir_labels: np.ndarray, pairs: np.ndarray, is_ir: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 training labels in record order from per-modality cluster ids and
    their pairs (:func:`cmamlib.labeling.unify_labels`, unmatched clusters keep their own
    label); ``-1`` noise."""
    is_ir = np.asarray(is_ir, dtype=bool)
    u_vis, u_ir = unify_labels(vis_labels, ir_labels, pairs, keep_unmatched=True)
    labels = np.full(len(is_ir), -1, dtype=np.int64)
    labels[~is_ir], labels[is_ir] = u_vis, u_ir
    return labels


def cluster_and_match(
    features: torch.Tensor | np.ndarray,
    is_ir: np.ndarray,
    cams: np.ndarray | None,
    cfg: SelfTrainConfig,
    epoch: int = 0,
    kmeans_k: tuple[int, int] | None = None,
    label_overrides: Mapping[str, Any] | None = None,
) -> EpochLabels:
    """One stage-2 epoch's pseudo labels, exactly as :func:`run_selftrain` computes them
    (``cluster_mode="per_modality"``; :func:`run_selftrain` calls this function).

    Steps: camera centring (``cfg.camera_centering``,
    :func:`cmamlib.clustering.camera_centre`); per modality Jaccard + DBSCAN
    (``cfg.k1, k2, eps, min_samples``), or spherical k-means with ``kmeans_k``
    clusters; bipartite matching of the visible and infrared centroids
    (:func:`cmamlib.labeling.match_clusters` with ``cfg.match_cost``,
    ``cfg.match_unequal``, ``cfg.match_threshold``); ``label_overrides`` when they apply
    to ``epoch`` (:func:`apply_overrides`); one shared label space
    (:func:`cmamlib.labeling.unify_labels`).

    Args:
        features: ``(N, D)`` float fused features of every record
            (:func:`selftrain_epoch_features`), before camera centring.
        is_ir: ``(N,)`` bool, True for infrared records.
        cams: ``(N,)`` int camera ids (needed when ``cfg.camera_centering``).
        cfg: the stage-2 config (clustering and matching fields are read).
        epoch: the epoch: seeds k-means (``cfg.seed * 1000 + epoch``, infrared + 500)
            and selects ``label_overrides`` with an ``"epochs"`` entry.
        kmeans_k: ``(K_visible, K_infrared)`` for a k-means epoch; None: DBSCAN.
        label_overrides: optional corrections (:func:`apply_overrides`).

    Returns:
        :class:`EpochLabels`.

    Raises:
        RuntimeError: a modality where the clustering found no cluster (names the epoch,
            the modality and ``eps``).
        ValueError: a modality with fewer than 2 images, mismatched lengths, or bad
            overrides.
    """
    x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features, dtype=np.float32))
    is_ir = np.asarray(is_ir, dtype=bool)
    if x.ndim != 2 or x.shape[0] != len(is_ir):
        raise ValueError(f"features {tuple(x.shape)} must be (N, D) with N = len(is_ir) = {len(is_ir)}")
    vis_idx, ir_idx = np.flatnonzero(~is_ir), np.flatnonzero(is_ir)
    if len(vis_idx) < 2 or len(ir_idx) < 2:
        raise ValueError(
            "per-modality clustering needs both modalities; got "
            f"{len(vis_idx)} visible and {len(ir_idx)} infrared records"
        )
    check_overrides(label_overrides)
    if cfg.camera_centering:
        if cams is None or len(cams) != len(is_ir):
            raise ValueError(
                f"camera_centering=True needs cams of length {len(is_ir)}, got {None if cams is None else len(cams)}"
            )
        x = camera_centre(x, np.asarray(cams))
    kv, ki = kmeans_k if kmeans_k is not None else (None, None)
    method = "k-means" if kmeans_k is not None else "DBSCAN"
    vis_lab = _cluster(x[vis_idx], cfg, kv, cfg.seed * 1000 + epoch, "visible")
    ir_lab = _cluster(x[ir_idx], cfg, ki, cfg.seed * 1000 + epoch + 500, "infrared")
    for side, lab in (("visible", vis_lab), ("infrared", ir_lab)):
        if int(lab.max(initial=-1)) < 0:
            _, _, eps, min_samples = cfg.dbscan_params(side)
            raise RuntimeError(
                f"stage 2, epoch {epoch}: {method} found no cluster among the {len(lab)} {side} images "
                f"(all noise); raise eps (now {eps} for {side}) or lower min_samples (now {min_samples} for {side})"
            )
    pairs = match_modalities(x[vis_idx], x[ir_idx], vis_lab, ir_lab, cfg)
    raw = (vis_lab, ir_lab, pairs)
    applied = _overrides_apply(label_overrides, epoch)
    if applied:
        vis_lab, ir_lab, pairs = apply_overrides(vis_lab, ir_lab, pairs, label_overrides)
    labels = shared_labels(vis_lab, ir_lab, pairs, is_ir)
    return EpochLabels(
        features=x,
        is_ir=is_ir,
        raw_vis_labels=raw[0],
        raw_ir_labels=raw[1],
        raw_pairs=raw[2],
        vis_labels=vis_lab,
        ir_labels=ir_lab,
        pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        similarity=_pair_similarity(x, vis_idx, ir_idx, raw[0], raw[1], np.asarray(pairs).reshape(-1, 2)),
        labels=labels,
        overrides_applied=applied,
    )


def selftrain_epoch_features(
    model_a: nn.Module,
    model_b: nn.Module | None,
    images: torch.Tensor,
    cfg: SelfTrainConfig,
    epoch: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Features of one stage-2 epoch as :func:`run_selftrain` extracts them (it calls
    this function): A on the images as they are, B on their gray view (``cfg.gray_mode``,
    generator seeded ``cfg.seed * 1000 + epoch``), both flip-averaged and L2-normalised,
    fused with ``cfg.fusion``.

    Args:
        model_a / model_b: the two models (``model_b`` None: A alone).
        images: ``(N, 3, H, W)`` uint8.
        cfg: the stage-2 config.
        epoch: the epoch whose gray-view seed is used.
        device: default: the device of ``model_a``.
        distributed: in a distributed run, each rank extracts a shard and the shards
            are gathered (:func:`cmamlib.training.loop.extract`); a collective.

    Returns:
        ``(f_a (N, Da), f_b (N, Db) or None, fused (N, D))``, float32, on ``device``.
        ``fused`` is the input of :func:`cluster_and_match`.
    """
    dev = torch.device(device) if device is not None else next(model_a.parameters()).device
    f_a = epoch_features(model_a, images, cfg, dev, progress=progress, desc="features A", distributed=distributed)
    f_b = None
    if model_b is not None:
        f_b = epoch_features(
            model_b,
            images,
            cfg,
            dev,
            gray_epoch=epoch,
            progress=progress,
            desc="features B (gray)",
            distributed=distributed,
        )
    fused = fuse([f for f in (f_a, f_b) if f is not None], cfg.fusion)
    return f_a, f_b, fused
