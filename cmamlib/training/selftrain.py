"""Stage 2: unsupervised cross-modality self-training on the target (docs/method.md,
"Stage 2" and "What the authors' released code does" -> Stage 2).

Two networks, initialised from stage 1 (or at random for the ablation):

* model ``A`` (from ``F_rg``) is fed every image as it is (visible RGB; infrared images
  are 3-channel gray already);
* model ``B`` (from ``F_g``) is fed the gray view of every image (random-channel gray by
  default, as the authors' code).

Per epoch (one re-clustering per pass over the pseudo-labelled images):

1. fused features ``concat(L2(A(x)), L2(B(gray x)))`` of every target image
   (:func:`cmamlib.training.loop.fuse`);
2. ``cluster_mode="per_modality"`` (default, the code): Jaccard + DBSCAN per modality
   (:func:`cmamlib.clustering.pseudo_labels`), then a bipartite matching of the
   visible and infrared cluster centroids (:func:`cmamlib.labeling.match_clusters`,
   ``ward_merge`` by default) and one shared label space
   (:func:`cmamlib.labeling.unify_labels`); DBSCAN noise is dropped from training.
   ``"joint"`` (ablation: no bipartite labeling): one clustering of both modalities;
3. optional user corrections (:func:`apply_overrides`) after clustering and matching;
4. a cluster memory per model over the shared labels, initialised at the centroids of
   that model's own features, and P x K batches with K/2 visible + K/2 infrared images
   per pseudo identity (:class:`cmamlib.data.samplers.CrossModalitySampler`), with::

       L = CE(z_A, y) + CE(z_B, y)
           + kl_w * (KL(sg z_B || z_A) + KL(sg z_A || z_B))      # mutual, both ways
           + dist_w * mean_ij (D(f_A)_ij - D(f_B)_ij)^2           # distance matrices (code: sum_ij)

   ``z`` the memory logits (cosine / temperature), ``f`` the BNNeck features, ``D`` the
   in-batch Euclidean distance matrix of L2-normalised features
   (:class:`cmamlib.losses.DistanceMatrixLoss`, both models get its gradient, as the
   code); memories updated after each step.

A second, optional phase (``kmeans_epochs``) repeats the loop with spherical k-means
per modality instead of DBSCAN (the authors' second phase).

Target identity labels are never read for training: the ``pid`` of the records feeds
only the diagnostics of the log (ARI / NMI / purity, correct-pair fraction).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..clustering import camera_centre, cluster_majority, label_quality, pseudo_labels
from ..data.loading import load_images
from ..data.records import INFRARED, Record
from ..data.samplers import CrossModalitySampler
from ..data.transforms import AugmentConfig, augment, gray_of_normalised, to_float
from ..labeling import COSTS, UNEQUAL, cluster_centroids, match_clusters, unify_labels
from ..losses import DistanceMatrixLoss, SymmetricKL
from ..memory import ClusterMemory
from ..models import ReIDNet, build_model
from ..utils import resolve_device, seed_everything
from .common import (
    Checkpointer,
    JsonlLogger,
    autocast,
    check_amp_dtype,
    check_resume_config,
    config_to_dict,
    gather_batch,
    make_optimizer,
    make_scaler,
    set_lr,
    to_memory_format,
    weights_fingerprint,
)
from .loop import ema_update, epoch_lr, extract, fuse, make_ema, restore_training_state, training_state

__all__ = [
    "OVERRIDE_KEYS",
    "EpochLabels",
    "SelfTrainConfig",
    "SelfTrainResult",
    "apply_overrides",
    "check_overrides",
    "cluster_and_match",
    "run_selftrain",
    "selftrain_epoch_features",
    "selftrain_features",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]

#: Keys of a ``label_overrides`` dict (see :func:`apply_overrides`).
OVERRIDE_KEYS = ("noise_clusters", "reject_pairs", "force_pairs", "epochs")


@dataclass
class SelfTrainConfig:
    """Stage-2 configuration. Defaults: the CPU synthetic preset; paper-scale values are
    in docs/method.md ("Defaults at paper scale"). Fields marked *reconstruction* are choices
    neither the paper's abstract nor its code settles.

    Attributes:
        arch / width / last_stride / non_local / pretrained: backbone of freshly built
            models (:func:`cmamlib.models.build_model`), used when ``run_selftrain`` gets
            no ``init_models`` (random init: the "no stage 1" ablation).
        image_size: ``(H, W)``; the authors use 384x128.
        batch_size / num_instances: P x K batches, K even (K/2 visible + K/2 infrared per
            pseudo identity with both modalities); the code uses 128 = 8 x 16.
        epochs: DBSCAN epochs (one re-clustering each).
        iters_per_epoch: batches per epoch; None = one pass over the pseudo-labelled
            images (the sampler's pass); CPU default 6 epochs x 40 batches.
        lr: Adam learning rate. 3.5e-3 here for the short CPU schedules from weak
            (random-init or CPU stage-1) weights; the authors' code uses 1e-4 with 12k
            iterations from ImageNet + stage-1 weights.
        weight_decay / warmup_epochs: 5e-4; linear warm-up then cosine decay per
            fractional epoch (:func:`cmamlib.training.loop.epoch_lr`; the schedule is
            restarted for the k-means phase, *reconstruction*).
        k1 / k2 / eps / min_samples: Jaccard + DBSCAN (the code's stage 2: 30, 6, 0.4, 4;
            CPU default k1 15: SYSU-MM01-synth has about 10 visible and 5 infrared
            training images per identity; the ``cpu-long`` preset clusters at that scale,
            k1 5, k2 3, eps 0.5, min_samples 2, :mod:`cmamlib.presets`). Each is one value
            for both modalities (the code) or a ``(visible, infrared)`` pair
            (*reconstruction*: the modalities differ in images per identity and in
            feature spread; :meth:`dbscan_params`); pairs need
            ``cluster_mode="per_modality"``.
        cluster_mode: ``"per_modality"`` (default, the code: cluster each modality, then
            match) or ``"joint"`` (ablation: one clustering of both modalities, no
            matching).
        match_unequal / match_cost / match_threshold: :func:`cmamlib.labeling.match_clusters`
            (``"ward_merge"``, ``"sqeuclidean"``, None: the code).
        temperature / memory_momentum / memory_mode: cluster memories (0.05, 0.2, "mean":
            the code).
        two_models: train A and B (default); False = ablation: model A only, no mutual
            terms, features of A alone.
        gray_mode: gray view fed to B: ``"random_channel"`` (the code) or ``"luma"``.
        kl_weight: weight of the mutual KL terms on memory logits (0.01, the code), each
            direction with its teacher detached.
        kl_mode: ``"plain"`` (``KL(softmax teacher || softmax student)`` per direction)
            or ``"symmetric"`` (:class:`cmamlib.losses.SymmetricKL` per direction);
            *reconstruction* of the exact form.
        dist_weight / dist_reduction: weight of the distance-matrix term (0.05, the code)
            and how it reduces the ``B x B`` entries: ``"mean"`` (default,
            *reconstruction*) or ``"sum"`` (the authors' code, B = 128 there: 16,384
            times the mean). Measured on the synthetic benchmark (6 epochs, seeds 0 / 1,
            ``reports/probes/stage2_code_scale.json``): the code's scale (the sum over
            this preset's 64 x 64 entries, i.e. ``dist_weight=204.8`` with the mean)
            gives the full method 16.6 ± 2.5 all-search mAP against 18.1 ± 1.2.
            The code's KL terms are likewise summed over the batch rather than averaged
            (``kl_weight=0.64`` with the mean at batch 64: 18.0 ± 1.9, the same).
        mutual_ema / ema_momentum: teachers of the mutual terms are EMA copies of the
            models (mean-teacher variant, off by default; 0.999).
        fusion: ``"concat"`` (default) or ``"mean"`` fusion of the two models' features
            for clustering.
        augment: crop / flip / erasing of the training batches (the gray view of B is
            taken from the augmented batch, so both models see the same crop).
        camera_centering: centre the fused features per camera before clustering and
            matching (:func:`cmamlib.clustering.camera_centre`; cameras are
            modality-specific, so this also removes each modality's mean feature).
            *Reconstruction*, as stage 1's ``camera_centering``: camera ids come from the
            file names, no identity label is read.
        kmeans_epochs: epochs of the optional second phase with spherical k-means per
            modality (0: off). K per modality: ``kmeans_k`` (an int for both modalities
            or ``(K_visible, K_infrared)``; ``cluster_mode="joint"`` uses the first), else
            the cluster count of the last DBSCAN epoch (*reconstruction*: the authors'
            K=400 encodes the known id count). k-means: sklearn ``KMeans`` on the
            L2-normalised fused features (spherical k-means approximation).
        seed / device / amp: reproducibility and hardware.
        amp_dtype / channels_last / pin_memory: GPU options, as documented in
            :class:`cmamlib.training.supervised.SupervisedConfig`.
        knn_backend: kNN of the Jaccard distance, as in
            :class:`cmamlib.training.cmam.CMAMConfig` (``"torch"``, ``"faiss"``, ``"auto"``).
        eval_batch_size: inference batch.
        sync_bn: distributed runs (``torchrun``) only: BatchNorm statistics over the
            global batch of all ranks (:func:`cmamlib.distributed.convert_sync_batchnorm`);
            no effect in one process.
    """

    arch: str = "resnet18"
    width: int = 16
    last_stride: int = 1
    non_local: bool = False
    pretrained: str | None = None
    image_size: tuple[int, int] = (64, 32)
    batch_size: int = 64
    num_instances: int = 8
    epochs: int = 6
    iters_per_epoch: int | None = 40
    lr: float = 3.5e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    k1: int | tuple[int, int] = 15
    k2: int | tuple[int, int] = 6
    eps: float | tuple[float, float] = 0.4
    min_samples: int | tuple[int, int] = 4
    cluster_mode: str = "per_modality"
    match_unequal: str = "ward_merge"
    match_cost: str = "sqeuclidean"
    match_threshold: float | None = None
    temperature: float = 0.05
    memory_momentum: float = 0.2
    memory_mode: str = "mean"
    two_models: bool = True
    gray_mode: str = "random_channel"
    kl_weight: float = 0.01
    kl_mode: str = "plain"
    dist_weight: float = 0.05
    dist_reduction: str = "mean"
    mutual_ema: bool = False
    ema_momentum: float = 0.999
    fusion: str = "concat"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    camera_centering: bool = True
    kmeans_epochs: int = 0
    kmeans_k: int | tuple[int, int] | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = False
    pin_memory: bool = True
    knn_backend: str = "torch"
    eval_batch_size: int = 256
    sync_bn: bool = False

    def validate(self) -> None:
        check_amp_dtype(self.amp_dtype)
        if self.knn_backend not in ("torch", "faiss", "auto"):
            raise ValueError(f"knn_backend={self.knn_backend!r}: expected 'torch', 'faiss' or 'auto'")
        if self.cluster_mode not in ("per_modality", "joint"):
            raise ValueError(f"cluster_mode={self.cluster_mode!r}: expected 'per_modality' or 'joint'")
        if self.match_unequal not in UNEQUAL:
            raise ValueError(f"match_unequal={self.match_unequal!r}: expected one of {UNEQUAL}")
        if self.match_cost not in COSTS:
            raise ValueError(f"match_cost={self.match_cost!r}: expected one of {COSTS}")
        if self.dist_reduction not in ("mean", "sum"):
            raise ValueError(f"dist_reduction={self.dist_reduction!r}: expected 'mean' or 'sum'")
        if self.kl_mode not in ("plain", "symmetric"):
            raise ValueError(f"kl_mode={self.kl_mode!r}: expected 'plain' or 'symmetric'")
        if self.fusion not in ("concat", "mean"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'concat' or 'mean'")
        if self.num_instances < 2 or self.num_instances % 2:
            raise ValueError(f"num_instances={self.num_instances}: expected an even K >= 2 (K/2 per modality)")
        if self.batch_size < self.num_instances or self.batch_size % self.num_instances:
            raise ValueError(f"batch_size={self.batch_size}: expected a multiple of num_instances={self.num_instances}")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: expected >= 1 (DBSCAN epochs come first)")
        if self.kmeans_epochs < 0:
            raise ValueError(f"kmeans_epochs={self.kmeans_epochs}: expected >= 0")
        if self.kmeans_k is not None:
            ks = _pair(self.kmeans_k)
            if min(ks) < 1:
                raise ValueError(f"kmeans_k={self.kmeans_k!r}: expected positive cluster counts")
        for name, cast in (("k1", int), ("k2", int), ("eps", float), ("min_samples", int)):
            pair = _pair(getattr(self, name), name, cast)
            if min(pair) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected > 0")
            if self.cluster_mode == "joint" and pair[0] != pair[1]:
                raise ValueError(
                    f"{name}={getattr(self, name)!r}: a (visible, infrared) pair needs cluster_mode='per_modality' "
                    "(the joint ablation clusters both modalities at once)"
                )

    def dbscan_params(self, modality: str) -> tuple[int, int, float, int]:
        """``(k1, k2, eps, min_samples)`` of one modality's Jaccard + DBSCAN clustering.

        Args:
            modality: ``"visible"`` or ``"infrared"`` (the joint ablation uses
                ``"visible"``; its values are the same for both).
        """
        if modality not in ("visible", "infrared"):
            raise ValueError(f"modality={modality!r}: expected 'visible' or 'infrared'")
        i = 0 if modality == "visible" else 1
        return (
            _pair(self.k1, "k1")[i],
            _pair(self.k2, "k2")[i],
            _pair(self.eps, "eps", float)[i],
            _pair(self.min_samples, "min_samples")[i],
        )

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.kmeans_epochs


def _pair(v: Any, name: str = "kmeans_k", cast: type = int) -> tuple[Any, Any]:
    """``v`` (one value, or a ``(visible, infrared)`` pair) as a ``(visible, infrared)`` tuple of ``cast``."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{name}={v!r}: expected one value or a (visible, infrared) pair")
        return cast(v[0]), cast(v[1])
    return cast(v), cast(v)


@dataclass
class SelfTrainResult:
    """Output of :func:`run_selftrain`.

    Attributes:
        model_a: model A (eval mode), fed images as they are.
        model_b: model B (eval mode), fed gray views; None with ``two_models=False``.
        history: one dict per epoch (losses, clustering and matching diagnostics, eval).
        labels: the last epoch's shared pseudo labels ``(N,)`` in record order, -1 for
            images left out of training (noise).
        seconds / images_per_second: wall time of the run and training throughput
            (training steps only, feature extraction and clustering excluded).
        config: the config used.
    """

    model_a: ReIDNet
    model_b: ReIDNet | None
    history: list[dict]
    labels: np.ndarray
    seconds: float
    images_per_second: float
    config: SelfTrainConfig


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
    ``cfg.match_unequal``, ``cfg.match_threshold``).

    Args:
        x_vis / x_ir: ``(Nv, D)`` / ``(Ni, D)`` features of each modality's records.
        vis_labels / ir_labels: ``(Nv,)`` / ``(Ni,)`` cluster ids, ``-1`` noise.

    Returns:
        ``(M, 2)`` int64 ``(visible_id, infrared_id)`` pairs.
    """
    vc, vids = cluster_centroids(x_vis, vis_labels)
    ic, iids = cluster_centroids(x_ir, ir_labels)
    m = match_clusters(vc, ic, cfg.match_cost, cfg.match_unequal, cfg.match_threshold)
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
    f_a = extract(
        model_a,
        images,
        dev,
        cfg.eval_batch_size,
        amp=cfg.amp,
        amp_dtype=cfg.amp_dtype,
        progress=progress,
        desc="features A",
        distributed=distributed,
    )
    f_b = None
    if model_b is not None:
        f_b = extract(
            model_b,
            images,
            dev,
            cfg.eval_batch_size,
            gray=cfg.gray_mode,
            seed=cfg.seed * 1000 + epoch,
            amp=cfg.amp,
            amp_dtype=cfg.amp_dtype,
            progress=progress,
            desc="features B (gray)",
            distributed=distributed,
        )
    fused = fuse([f for f in (f_a, f_b) if f is not None], cfg.fusion)
    return f_a, f_b, fused


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def _new_model(cfg: SelfTrainConfig) -> ReIDNet:
    return build_model(
        cfg.arch, width=cfg.width, last_stride=cfg.last_stride, non_local=cfg.non_local, pretrained=cfg.pretrained
    )


def _flatten(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_selftrain(
    config: SelfTrainConfig,
    target_records: Sequence[Record],
    images: torch.Tensor | None = None,
    init_models: tuple[nn.Module, nn.Module | None] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    label_overrides: Mapping[str, Any] | None = None,
    eval_fn: Callable[[nn.Module, nn.Module | None], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
) -> SelfTrainResult:
    """Train stage 2 on unlabeled visible + infrared target images.

    Args:
        config: :class:`SelfTrainConfig`.
        target_records: the target training images, both modalities; training reads
            ``modality`` only (the ``pid`` feeds the log's diagnostics, nothing else).
        images: optional pre-decoded ``(N, 3, H, W)`` uint8 images of the records.
        init_models: ``(model_a, model_b)``, stage 1's ``(F_rg, F_g)``; deep-copied (the
            caller's models are never modified). ``model_b`` may be None with
            ``two_models=False``. None: both built fresh with ``config``'s backbone and
            a seeded random init.
        run_dir: folder of ``log.jsonl`` and ``checkpoint.pt`` (written atomically after
            every epoch); None keeps everything in memory.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists (the config and
            the initial weights, checked by :func:`cmamlib.training.common.weights_fingerprint`,
            must be the same; an already finished run returns at once); the result equals
            that of an uninterrupted run.
        progress: progress bars.
        on_epoch_end: ``hook(epoch, log_row)`` after the epoch's checkpoint; raising
            :class:`cmamlib.training.loop.StopTraining` stops the run.
        label_overrides: corrections applied after every epoch's clustering and matching
            (:func:`apply_overrides`); an ``"epochs": [...]`` entry restricts them to
            those epochs. Per-modality mode only.
        eval_fn: ``eval_fn(model_a, model_b) -> dict`` run after the training of epochs
            with ``(epoch + 1) % eval_every == 0`` and after the last epoch; its (flattened)
            entries are logged with the prefix ``eval_``.
        eval_every: see ``eval_fn`` (0: last epoch only).

    Distributed (a process group initialised, e.g. by ``torchrun`` and
    :func:`cmamlib.distributed.init_from_env`): every rank calls this with the same
    arguments; see :mod:`cmamlib.distributed`. Rank 0 clusters, writes the run folder and
    runs ``eval_fn``; every rank returns the same models.

    Returns:
        :class:`SelfTrainResult`.

    Raises:
        RuntimeError: clustering finds no cluster in a modality, or fewer pseudo
            identities than the P identities of a batch (the message names the epoch,
            the counts and ``eps``).
        ValueError: a bad config, override dict, or a resume with another config.
    """
    cfg = config
    cfg.validate()
    check_overrides(label_overrides)
    if label_overrides and cfg.cluster_mode != "per_modality":
        raise ValueError("label_overrides refer to per-modality clusters: use cluster_mode='per_modality'")
    n = len(target_records)
    if n < 2:
        raise ValueError(f"run_selftrain: need target images, got {n} records")
    is_ir = np.array([r.modality == INFRARED for r in target_records], dtype=bool)
    cams = np.array([r.camid for r in target_records])
    vis_idx, ir_idx = np.flatnonzero(~is_ir), np.flatnonzero(is_ir)
    if cfg.cluster_mode == "per_modality" and (len(vis_idx) < 2 or len(ir_idx) < 2):
        raise ValueError(
            f"run_selftrain: per-modality clustering needs both modalities; got {len(vis_idx)} visible "
            f"and {len(ir_idx)} infrared records"
        )
    true_ids = np.array([r.pid for r in target_records])  # diagnostics only
    distributed.check_batch_split(cfg.batch_size, cfg.num_instances, "stage 2: ")
    progress = progress and distributed.is_main()
    device = distributed.local_device(resolve_device(cfg.device))
    if images is None:
        images = load_images(target_records, cfg.image_size, progress=progress, desc="target images")
    if images.shape[0] != n:
        raise ValueError(f"images has {images.shape[0]} rows for {n} records")

    seed_everything(cfg.seed)
    if init_models is None:
        model_a = _new_model(cfg)
        model_b = _new_model(cfg) if cfg.two_models else None
    else:
        init_a, init_b = init_models
        if init_a is None:
            raise ValueError("init_models: model_a is None")
        if cfg.two_models and init_b is None:
            raise ValueError("init_models: model_b is None but two_models=True (pass F_g, or two_models=False)")
        model_a = copy.deepcopy(init_a)
        model_b = copy.deepcopy(init_b) if cfg.two_models else None
    model_a = to_memory_format(model_a.to(device), cfg.channels_last).train()
    if model_b is not None:
        model_b = to_memory_format(model_b.to(device), cfg.channels_last).train()
    nets = [m for m in (model_a, model_b) if m is not None]
    init_fingerprint = weights_fingerprint(model_a, model_b)  # a resume must start from the same weights
    if cfg.sync_bn:
        for m in nets:
            distributed.convert_sync_batchnorm(m, device)
    opt = make_optimizer([p for m in nets for p in m.parameters()], cfg.lr, cfg.weight_decay)
    scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
    ema_a = make_ema(model_a) if (cfg.mutual_ema and model_b is not None) else None
    ema_b = make_ema(model_b) if (cfg.mutual_ema and model_b is not None) else None
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = Checkpointer(run_dir if distributed.is_main() else None)  # rank 0 writes
    logger = JsonlLogger(None if run_dir is None or not distributed.is_main() else Path(run_dir) / "log.jsonl")
    start_epoch, train_seconds, n_seen = 0, 0.0, 0
    labels = np.full(n, -1, dtype=np.int64)
    dbscan_counts: tuple[int, int] | None = None  # (visible, infrared) or (joint, joint)
    modules = {"model_a": model_a, "model_b": model_b, "ema_a": ema_a, "ema_b": ema_b}
    state = distributed.run_on_main(ckpt.load) if resume else None
    if state is not None:
        check_resume_config(state, cfg, ckpt.path)
        if state.get("label_overrides") != (None if label_overrides is None else dict(label_overrides)):
            raise ValueError(f"cannot resume from {ckpt.path}: it was written with other label_overrides")
        if state.get("init_fingerprint", init_fingerprint) != init_fingerprint:
            raise ValueError(
                f"cannot resume from {ckpt.path}: it started from other initial models than "
                "init_models (e.g. a retrained stage 1); use another run folder or resume=False"
            )
        restore_training_state(state, modules, opt, scaler, gen)
        start_epoch = int(state["epoch"]) + 1
        train_seconds, n_seen, labels = state["train_seconds"], state["n_seen"], state["labels"]
        dbscan_counts = state["dbscan_counts"]
        logger.truncate_to(start_epoch)
    else:
        logger.start_fresh()  # a fresh run replaces an old log

    train_a = distributed.wrap_ddp(model_a, device)  # the bare models themselves in one process
    train_b = distributed.wrap_ddp(model_b, device) if model_b is not None else None
    kl_sym = SymmetricKL()
    dist = DistanceMatrixLoss(detach_teacher=cfg.mutual_ema, reduction=cfg.dist_reduction)
    p_ids = cfg.batch_size // cfg.num_instances
    t0 = time.time()
    for epoch in range(start_epoch, cfg.total_epochs):
        te = time.time()
        kmeans_phase = epoch >= cfg.epochs
        phase_epoch, phase_len = (epoch - cfg.epochs, cfg.kmeans_epochs) if kmeans_phase else (epoch, cfg.epochs)
        # ---- features ------------------------------------------------------------------
        f_a, f_b, fused = selftrain_epoch_features(
            model_a, model_b, images, cfg, epoch, device, progress, distributed=True
        )

        # ---- pseudo labels (on rank 0 in a distributed run, broadcast) ---------------------
        if kmeans_phase:
            ks = _pair(cfg.kmeans_k) if cfg.kmeans_k is not None else dbscan_counts
        method = "k-means" if kmeans_phase else "DBSCAN"

        def _pseudo_labels(fused: torch.Tensor = fused) -> tuple[dict, np.ndarray, tuple[int, int]]:
            row: dict = {"epoch": epoch, "phase": "kmeans" if kmeans_phase else "dbscan"}
            if cfg.cluster_mode == "per_modality":
                el = cluster_and_match(fused, is_ir, cams, cfg, epoch, ks if kmeans_phase else None, label_overrides)
                row.update({f"vis_{k}": v for k, v in label_quality(el.raw_vis_labels, true_ids[vis_idx]).items()})
                row.update({f"ir_{k}": v for k, v in label_quality(el.raw_ir_labels, true_ids[ir_idx]).items()})
                row["pairs_matched"] = int(len(el.raw_pairs))
                if el.overrides_applied:
                    row["overrides_applied"] = True
                vis_lab, ir_lab, pairs, labels = el.vis_labels, el.ir_labels, el.pairs, el.labels
                row["pairs"] = int(len(pairs))
                row["pairs_correct_fraction"] = pair_accuracy(
                    pairs, vis_lab, ir_lab, true_ids[vis_idx], true_ids[ir_idx]
                )
                counts = (int(row["vis_clusters"]), int(row["ir_clusters"]))
            else:  # joint: one clustering of both modalities, no matching
                if cfg.camera_centering:  # per camera, hence also per modality (cameras are modality-specific)
                    fused = camera_centre(fused, cams)
                k = ks[0] if kmeans_phase else None
                labels = _cluster(fused, cfg, k, cfg.seed * 1000 + epoch)
                for side, idx, pre in (("visible", vis_idx, "vis"), ("infrared", ir_idx, "ir")):
                    row.update({f"{pre}_{k}": v for k, v in label_quality(labels[idx], true_ids[idx]).items()})
                # "pairs": joint clusters holding both modalities
                both = np.intersect1d(labels[vis_idx][labels[vis_idx] >= 0], labels[ir_idx][labels[ir_idx] >= 0])
                pairs = np.stack([both, both], 1)
                row["pairs"] = int(len(pairs))
                row["pairs_correct_fraction"] = pair_accuracy(
                    pairs, labels[vis_idx], labels[ir_idx], true_ids[vis_idx], true_ids[ir_idx]
                )
                counts = (int(labels.max(initial=-1)) + 1,) * 2
            return row, labels, counts

        row, labels, counts = distributed.run_on_main(_pseudo_labels)
        if not kmeans_phase:
            dbscan_counts = counts
        row.update({f"unified_{k}": v for k, v in label_quality(labels, true_ids).items()})
        n_ids = int(labels.max(initial=-1)) + 1
        row["cross_ids"] = int(
            len(np.intersect1d(labels[vis_idx][labels[vis_idx] >= 0], labels[ir_idx][labels[ir_idx] >= 0]))
        )
        if n_ids < p_ids:
            raise RuntimeError(
                f"stage 2, epoch {epoch}: {n_ids} pseudo identities after {method} ({cfg.cluster_mode}; visible "
                f"clusters {row['vis_clusters']}, infrared clusters {row['ir_clusters']}, {row['pairs']} pairs, "
                f"noise {row['unified_noise_fraction']:.0%}), fewer than the P={p_ids} identities a batch needs "
                f"(batch_size {cfg.batch_size} / num_instances {cfg.num_instances}); raise eps (now {cfg.eps}), "
                f"lower min_samples (now {cfg.min_samples}) or lower batch_size"
            )
        lab_t = torch.from_numpy(labels).to(device)
        mem_a = ClusterMemory(model_a.feat_dim, n_ids, cfg.temperature, cfg.memory_momentum, cfg.memory_mode).to(device)
        mem_a.reset(f_a.to(device), lab_t)
        mem_b = None
        if model_b is not None:
            mem_b = ClusterMemory(model_b.feat_dim, n_ids, cfg.temperature, cfg.memory_momentum, cfg.memory_mode).to(
                device
            )
            mem_b.reset(f_b.to(device), lab_t)
        row["cluster_seconds"] = time.time() - te

        # ---- training ------------------------------------------------------------------
        # global batches on every rank; each rank trains on its slice (distributed.shard_batch)
        sampler = CrossModalitySampler(
            labels, is_ir, cfg.num_instances, cfg.batch_size, cfg.seed, cfg.iters_per_epoch, rank=0, world_size=1
        )
        sampler.set_epoch(epoch)
        batches = list(sampler.batches())
        for mdl in nets:
            mdl.train()
        sums: dict[str, float] = {}
        ts, seen0 = time.time(), n_seen
        desc = f"stage 2 epoch {epoch + 1}/{cfg.total_epochs}"
        for i, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
            idx_t = torch.as_tensor(idx)
            x = augment(to_float(gather_batch(images, idx_t, device, cfg.pin_memory)), cfg.augment, gen)
            x = to_memory_format(x, cfg.channels_last)
            xg = gray_of_normalised(x, cfg.gray_mode, gen) if model_b is not None else None
            y = y_all = lab_t[idx_t.to(device)]
            if distributed.is_distributed():  # this rank's slice of the global batch
                x, y = distributed.shard_batch(x), distributed.shard_batch(y)
                xg = distributed.shard_batch(xg) if xg is not None else None
            set_lr(opt, epoch_lr(cfg.lr, phase_epoch, i, len(batches), phase_len, cfg.warmup_epochs))
            terms, upd = _step_losses(cfg, x, xg, y, train_a, train_b, mem_a, mem_b, ema_a, ema_b, kl_sym, dist, device)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            mem_a.update(upd[0], y_all)  # the global batch's features (gathered from every rank)
            if mem_b is not None:
                mem_b.update(upd[1], y_all)
            if ema_a is not None:
                ema_update(ema_a, model_a, cfg.ema_momentum)
                ema_update(ema_b, model_b, cfg.ema_momentum)
            n_seen += len(idx)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["total"] = sums.get("total", 0.0) + float(loss.detach())
        epoch_train_seconds = time.time() - ts
        train_seconds += epoch_train_seconds
        sums = distributed.all_reduce_mean(sums)  # the global-batch means (identity in one process)
        row.update({f"loss_{k}": v / max(len(batches), 1) for k, v in sums.items()})
        row.update({"batches": len(batches), "lr_end": opt.param_groups[0]["lr"]})
        row["train_images_per_second"] = (n_seen - seen0) / max(epoch_train_seconds, 1e-9)
        if distributed.is_distributed():  # BN running stats of rank 0 everywhere, then prove the ranks agree
            distributed.sync_buffers([model_a, model_b, ema_a, ema_b])
            row["world_size"] = distributed.world_size()
            row["rank_state_hashes"] = distributed.all_gather_object(distributed.state_hash(modules))
        last = epoch == cfg.total_epochs - 1
        if (
            eval_fn is not None
            and distributed.is_main()
            and (last or (eval_every > 0 and (epoch + 1) % eval_every == 0))
        ):
            for mdl in nets:
                mdl.eval()
            with torch.no_grad():
                res = eval_fn(model_a, model_b)
            for mdl in nets:
                mdl.train()
            row.update(_flatten(res or {}, "eval_"))
        row["seconds"] = time.time() - te
        logger.log(row)
        state = {
            **training_state(modules, opt, scaler, gen),
            "epoch": epoch,
            "labels": labels,
            "dbscan_counts": dbscan_counts,
            "train_seconds": train_seconds,
            "n_seen": n_seen,
            "config": config_to_dict(cfg),
            "label_overrides": None if label_overrides is None else dict(label_overrides),
            "init_fingerprint": init_fingerprint,
            "stage": "selftrain",
        }
        ckpt.save(state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    for mdl in nets:
        mdl.eval()
    logger.close()
    return SelfTrainResult(
        model_a=model_a,
        model_b=model_b,
        history=logger.rows,
        labels=labels,
        seconds=time.time() - t0,
        images_per_second=n_seen / max(train_seconds, 1e-9),
        config=cfg,
    )


def _kl(student: torch.Tensor, teacher: torch.Tensor, mode: str, sym: SymmetricKL) -> torch.Tensor:
    """One direction of the mutual KL: the student learns the (detached) teacher."""
    if mode == "symmetric":
        return sym(student, teacher)
    return F.kl_div(
        F.log_softmax(student.float(), 1),
        F.log_softmax(teacher.detach().float(), 1),
        reduction="batchmean",
        log_target=True,
    )


def _step_losses(
    cfg: SelfTrainConfig,
    x: torch.Tensor,
    xg: torch.Tensor | None,
    y: torch.Tensor,
    model_a: nn.Module,
    model_b: nn.Module | None,
    mem_a: ClusterMemory,
    mem_b: ClusterMemory | None,
    ema_a: nn.Module | None,
    ema_b: nn.Module | None,
    kl_sym: SymmetricKL,
    dist: DistanceMatrixLoss,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """Loss terms of one batch (module docstring) and the detached features of the
    memory updates ``(A, B)``.

    ``x`` / ``xg``: the (augmented, normalised) batch and the gray view fed to B (None
    without B). In a distributed run they are this rank's slice of the global batch; the
    distance-matrix term uses features gathered from every rank
    (:func:`cmamlib.distributed.gather_with_grad`, the identity in one process), and the
    returned memory-update features are those of the whole global batch."""
    out: dict[str, torch.Tensor] = {}
    gather = distributed.gather_with_grad
    with autocast(device, cfg.amp, cfg.amp_dtype):
        f_a = model_a(x).bn_feat
        z_a = mem_a.logits(f_a)
        out["mem_a"] = F.cross_entropy(z_a, y)
        if model_b is None:
            return out, (distributed.all_gather_tensor(f_a.detach()), None)
        f_b = model_b(xg).bn_feat
        z_b = mem_b.logits(f_b)
        out["mem_b"] = F.cross_entropy(z_b, y)
        if ema_a is not None:
            with torch.no_grad():
                t_a = ema_a(x).bn_feat
                t_b = ema_b(xg).bn_feat
            tz_a, tz_b = mem_a.logits(t_a), mem_b.logits(t_b)
        else:
            t_a, t_b, tz_a, tz_b = f_a.detach(), f_b.detach(), z_a.detach(), z_b.detach()
        if cfg.kl_weight > 0:
            out["kl_a"] = cfg.kl_weight * _kl(z_a, tz_b, cfg.kl_mode, kl_sym)  # A learns from B
            out["kl_b"] = cfg.kl_weight * _kl(z_b, tz_a, cfg.kl_mode, kl_sym)  # B learns from A
        if cfg.dist_weight > 0:
            ga, gb = gather(f_a), gather(f_b)  # global batch
            if ema_a is not None:  # each model towards the other's EMA teacher
                out["dist"] = cfg.dist_weight * 0.5 * (dist(ga, gather(t_b)) + dist(gb, gather(t_a)))
            else:  # the code: one term, both models receive its gradient
                out["dist"] = cfg.dist_weight * dist(ga, gb)
    return out, (distributed.all_gather_tensor(f_a.detach()), distributed.all_gather_tensor(f_b.detach()))


def selftrain_features(
    model_a: nn.Module,
    model_b: nn.Module | None,
    gray_mode: str = "random_channel",
    fusion: str = "concat",
    batch_size: int = 256,
    seed: int = 0,
) -> FeatureFn:
    """Test-time feature function of a stage-2 pair: uint8 images ``(N, 3, H, W)`` ->
    ``fuse([L2(A(x)), L2(B(gray x))])`` ``(N, D)`` float32, L2-normalised, flip-averaged
    (:func:`cmamlib.training.loop.extract`; the random-channel gray view uses a generator
    seeded with ``seed``, so the same images always give the same features). With
    ``model_b=None``: A's features alone. Runs on the device of ``model_a``."""
    dev = next(model_a.parameters()).device

    def fn(images: torch.Tensor) -> torch.Tensor:
        parts = [extract(model_a, images, dev, batch_size)]
        if model_b is not None:
            parts.append(extract(model_b, images, dev, batch_size, gray=gray_mode, seed=seed))
        return fuse(parts, fusion)

    return fn
