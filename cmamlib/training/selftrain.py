"""Stage 2: unsupervised cross-modality self-training on the target (docs/method.md,
"Stage 2" and "What the authors' released code does" -> Stage 2).

Two networks, initialised from stage 1 (or at random for the ablation; ``init_carry``:
every weight, or the backbone only as the code, :func:`carry_over`):

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
   per pseudo identity (:class:`cmamlib.data.samplers.CrossModalitySampler`;
   ``sampler="other_cameras"``: the code's anchor + other cameras,
   :class:`cmamlib.data.samplers.OtherCameraSampler`), with::

       L = CE(z_A, y) + CE(z_B, y)
           + kl_w * (KL(sg z_B || z_A) + KL(sg z_A || z_B))      # mutual, both ways (batch mean)
           + dist_w * mean_ij (D(f_A)_ij - D(f_B)_ij)^2           # distance matrices

   (the code: ``kl_detach=False`` without ``sg``, ``kl_reduction="sum"`` over the batch,
   ``dist_reduction="sum"`` over ``ij``; :data:`CODE_DEFAULTS`)

   ``z`` the memory logits (cosine / temperature), ``f`` the BNNeck features, ``D`` the
   in-batch Euclidean distance matrix of L2-normalised features
   (:class:`cmamlib.losses.DistanceMatrixLoss`, both models get its gradient, as the
   code); memories updated after each step.

A second, optional phase (``kmeans_epochs``) repeats the loop with spherical k-means
per modality instead of DBSCAN (the authors' second phase).

Target identity labels are never read for training: the ``pid`` of the records feeds
only the diagnostics of the log (ARI / NMI / purity, correct-pair fraction).

This module is the driver (:func:`run_selftrain`) and the test feature
(:func:`selftrain_features`); the stage's other parts live beside it and are re-exported
here: the config (:mod:`.selftrain_config`), the pseudo labels of an epoch
(:mod:`.pseudo_labels`), the human corrections (:mod:`.label_overrides`) and the losses
of a step (:mod:`.selftrain_step`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .. import distributed
from ..clustering import camera_centre, label_quality
from ..data.records import INFRARED, Record
from ..data.samplers import CrossModalitySampler, OtherCameraSampler
from ..data.transforms import augment, gray_of_normalised, to_float
from ..losses import DistanceMatrixLoss, SymmetricKL
from ..memory import ClusterMemory
from ..models import GeM, ReIDNet, build_model
from ..utils import resolve_device, seed_everything
from .common import (
    gather_batch,
    make_optimizer,
    make_scaler,
    to_memory_format,
    weights_fingerprint,
)
from .driver import Stage, train, training_images
from .label_overrides import OVERRIDE_KEYS, _overrides_apply, apply_overrides, check_overrides  # noqa: F401
from .loop import ema_update, epoch_lr, extract, fuse, make_ema
from .pseudo_labels import (  # noqa: F401
    EpochLabels,
    _cluster,
    _kmeans,
    _majority,
    _pair_similarity,
    cluster_and_match,
    match_modalities,
    pair_accuracy,
    selftrain_epoch_features,
    shared_labels,
)
from .selftrain_config import CODE_DEFAULTS, EARLIER_DEFAULTS, TEST_FEATURES, SelfTrainConfig, _pair  # noqa: F401
from .selftrain_step import _kl, _step_losses  # noqa: F401

__all__ = [
    "CODE_DEFAULTS",
    "EARLIER_DEFAULTS",
    "OVERRIDE_KEYS",
    "EpochLabels",
    "SelfTrainConfig",
    "SelfTrainResult",
    "apply_overrides",
    "carry_over",
    "check_overrides",
    "cluster_and_match",
    "run_selftrain",
    "selftrain_epoch_features",
    "selftrain_features",
    "test_feature_fn",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


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
# the run
# --------------------------------------------------------------------------------------


def carry_over(model: nn.Module, carry: str = "all") -> nn.Module:
    """The stage-2 copy of a stage-1 model (``SelfTrainConfig.init_carry``).

    ``"all"``: a deep copy, every weight and buffer. ``"backbone"`` (the authors' code,
    whose stage-2 head keys do not match stage 1's): a deep copy whose head is reset to a
    fresh one, i.e. only ``backbone.*`` carries over; GeM ``p`` back to 3 (a fixed
    exponent stays as built), the BNNeck (``nn.BatchNorm1d``) back to weight 1, bias 0,
    running mean 0, running variance 1, no batches tracked, as
    :func:`cmamlib.models.build_model` makes them. The input model is not modified.
    """
    if carry not in ("all", "backbone"):
        raise ValueError(f"init_carry={carry!r}: expected 'all' or 'backbone'")
    out = copy.deepcopy(model)
    if carry == "all":
        return out
    if not isinstance(out, ReIDNet):
        raise TypeError(f"init_carry='backbone' needs a ReIDNet (backbone / pool / neck), got {type(out).__name__}")
    with torch.no_grad():
        if isinstance(out.pool, GeM) and isinstance(out.pool.p, torch.Tensor):
            out.pool.p.fill_(3.0)
        if isinstance(out.neck, nn.BatchNorm1d):
            out.neck.reset_running_stats()
            nn.init.ones_(out.neck.weight)
            nn.init.zeros_(out.neck.bias)
    return out


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


class SelfTrainStage(Stage):
    """Stage 2 as a :class:`cmamlib.training.driver.Stage`: per epoch the fused features,
    the pseudo labels (rank 0, broadcast), one cluster memory per model and the sampler's
    batches; per step the losses of :func:`_step_losses`, then the memory and EMA
    updates. :func:`run_selftrain` is the entry point; the arguments are its own."""

    name = "selftrain"
    desc = "stage 2"

    def __init__(
        self,
        config: SelfTrainConfig,
        target_records: Sequence[Record],
        images: torch.Tensor | None,
        init_models: tuple[nn.Module, nn.Module | None] | None,
        progress: bool,
        label_overrides: Mapping[str, Any] | None,
        eval_fn: Callable[[nn.Module, nn.Module | None], Mapping[str, Any]] | None,
        eval_every: int,
    ):
        cfg = self.config = config
        cfg.validate()
        check_overrides(label_overrides)
        if label_overrides and cfg.cluster_mode != "per_modality":
            raise ValueError("label_overrides refer to per-modality clusters: use cluster_mode='per_modality'")
        n = len(target_records)
        if n < 2:
            raise ValueError(f"run_selftrain: need target images, got {n} records")
        self.label_overrides = label_overrides
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self.is_ir = is_ir = np.array([r.modality == INFRARED for r in target_records], dtype=bool)
        self.cams = np.array([r.camid for r in target_records])
        self.vis_idx, self.ir_idx = np.flatnonzero(~is_ir), np.flatnonzero(is_ir)
        if cfg.cluster_mode == "per_modality" and (len(self.vis_idx) < 2 or len(self.ir_idx) < 2):
            raise ValueError(
                f"run_selftrain: per-modality clustering needs both modalities; got {len(self.vis_idx)} visible "
                f"and {len(self.ir_idx)} infrared records"
            )
        self.true_ids = np.array([r.pid for r in target_records])  # diagnostics only
        distributed.check_batch_split(cfg.batch_size, cfg.num_instances, "stage 2: ")
        self.progress = progress = progress and distributed.is_main()
        self.device = device = distributed.local_device(resolve_device(cfg.device))
        self.images = training_images(target_records, images, cfg.image_size, progress, "target images")

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
            model_a = carry_over(init_a, cfg.init_carry)
            model_b = carry_over(init_b, cfg.init_carry) if cfg.two_models else None
        self.model_a = model_a = to_memory_format(model_a.to(device), cfg.channels_last).train()
        if model_b is not None:
            model_b = to_memory_format(model_b.to(device), cfg.channels_last).train()
        self.model_b = model_b
        self.nets = [m for m in (model_a, model_b) if m is not None]
        self.init_fingerprint = weights_fingerprint(model_a, model_b)  # a resume must start from the same weights
        if cfg.sync_bn:
            for m in self.nets:
                distributed.convert_sync_batchnorm(m, device)
        self.train_modules = self.eval_modules = self.nets
        self.opt = make_optimizer([p for m in self.nets for p in m.parameters()], cfg.lr, cfg.weight_decay)
        self.scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
        self.ema_a = make_ema(model_a) if (cfg.mutual_ema and model_b is not None) else None
        self.ema_b = make_ema(model_b) if (cfg.mutual_ema and model_b is not None) else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.labels = np.full(n, -1, dtype=np.int64)
        self.dbscan_counts: tuple[int, int] | None = None  # (visible, infrared) or (joint, joint)
        self.modules = {"model_a": model_a, "model_b": model_b, "ema_a": self.ema_a, "ema_b": self.ema_b}
        self.buffer_modules = [model_a, model_b, self.ema_a, self.ema_b]
        self.kl_sym = SymmetricKL(reduction=cfg.kl_reduction, detach_teacher=cfg.kl_detach)
        self.dist = DistanceMatrixLoss(detach_teacher=cfg.mutual_ema, reduction=cfg.dist_reduction)
        self.p_ids = cfg.batch_size // cfg.num_instances
        self.epochs = cfg.total_epochs

    def check_resume(self, state: dict, path: Path | None) -> None:
        overrides = self.label_overrides
        if state.get("label_overrides") != (None if overrides is None else dict(overrides)):
            raise ValueError(f"cannot resume from {path}: it was written with other label_overrides")
        if state.get("init_fingerprint", self.init_fingerprint) != self.init_fingerprint:
            raise ValueError(
                f"cannot resume from {path}: it started from other initial models than "
                "init_models (e.g. a retrained stage 1); use another run folder or resume=False"
            )

    def restore(self, state: dict) -> None:
        self.labels, self.dbscan_counts = state["labels"], state["dbscan_counts"]

    def wrap(self) -> None:
        self.train_a = distributed.wrap_ddp(self.model_a, self.device)  # the bare models themselves in one process
        self.train_b = distributed.wrap_ddp(self.model_b, self.device) if self.model_b is not None else None

    def _pseudo_labels(
        self, epoch: int, fused: torch.Tensor, kmeans_phase: bool, ks: tuple[int, int] | None
    ) -> tuple[dict, np.ndarray, tuple[int, int]]:
        """The epoch's labels from the fused features (run on rank 0): ``(log row, labels (N,), counts)``."""
        cfg, true_ids, vis_idx, ir_idx = self.config, self.true_ids, self.vis_idx, self.ir_idx
        row: dict = {"epoch": epoch, "phase": "kmeans" if kmeans_phase else "dbscan"}
        if cfg.cluster_mode == "per_modality":
            el = cluster_and_match(
                fused, self.is_ir, self.cams, cfg, epoch, ks if kmeans_phase else None, self.label_overrides
            )
            row.update({f"vis_{k}": v for k, v in label_quality(el.raw_vis_labels, true_ids[vis_idx]).items()})
            row.update({f"ir_{k}": v for k, v in label_quality(el.raw_ir_labels, true_ids[ir_idx]).items()})
            row["pairs_matched"] = int(len(el.raw_pairs))
            if el.overrides_applied:
                row["overrides_applied"] = True
            vis_lab, ir_lab, pairs, labels = el.vis_labels, el.ir_labels, el.pairs, el.labels
            row["pairs"] = int(len(pairs))
            row["pairs_correct_fraction"] = pair_accuracy(pairs, vis_lab, ir_lab, true_ids[vis_idx], true_ids[ir_idx])
            counts = (int(row["vis_clusters"]), int(row["ir_clusters"]))
        else:  # joint: one clustering of both modalities, no matching
            if cfg.camera_centering:  # per camera, hence also per modality (cameras are modality-specific)
                fused = camera_centre(fused, self.cams)
            k = ks[0] if kmeans_phase else None
            labels = _cluster(fused, cfg, k, cfg.seed * 1000 + epoch)
            for idx, pre in ((vis_idx, "vis"), (ir_idx, "ir")):
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

    def begin_epoch(self, epoch: int) -> tuple[dict, list[np.ndarray]]:
        cfg, device, vis_idx, ir_idx = self.config, self.device, self.vis_idx, self.ir_idx
        te = time.time()
        kmeans_phase = epoch >= cfg.epochs
        self.phase = (epoch - cfg.epochs, cfg.kmeans_epochs) if kmeans_phase else (epoch, cfg.epochs)
        # ---- features ------------------------------------------------------------------
        f_a, f_b, fused = selftrain_epoch_features(
            self.model_a, self.model_b, self.images, cfg, epoch, device, self.progress, distributed=True
        )
        # ---- pseudo labels (on rank 0 in a distributed run, broadcast) ---------------------
        ks = None
        if kmeans_phase:
            ks = _pair(cfg.kmeans_k) if cfg.kmeans_k is not None else self.dbscan_counts
        method = "k-means" if kmeans_phase else "DBSCAN"
        row, labels, counts = distributed.run_on_main(lambda: self._pseudo_labels(epoch, fused, kmeans_phase, ks))
        if not kmeans_phase:
            self.dbscan_counts = counts
        self.labels = labels
        row.update({f"unified_{k}": v for k, v in label_quality(labels, self.true_ids).items()})
        n_ids = int(labels.max(initial=-1)) + 1
        row["cross_ids"] = int(
            len(np.intersect1d(labels[vis_idx][labels[vis_idx] >= 0], labels[ir_idx][labels[ir_idx] >= 0]))
        )
        if n_ids < self.p_ids:
            raise RuntimeError(
                f"stage 2, epoch {epoch}: {n_ids} pseudo identities after {method} ({cfg.cluster_mode}; visible "
                f"clusters {row['vis_clusters']}, infrared clusters {row['ir_clusters']}, {row['pairs']} pairs, "
                f"noise {row['unified_noise_fraction']:.0%}), fewer than the P={self.p_ids} identities a batch needs "
                f"(batch_size {cfg.batch_size} / num_instances {cfg.num_instances}); raise eps (now {cfg.eps}), "
                f"lower min_samples (now {cfg.min_samples}) or lower batch_size"
            )
        self.lab_t = lab_t = torch.from_numpy(labels).to(device)

        def memory(model: nn.Module, feats: torch.Tensor) -> ClusterMemory:  # at the centroids of its own features
            mem = ClusterMemory(model.feat_dim, n_ids, cfg.temperature, cfg.memory_momentum, cfg.memory_mode)
            mem = mem.to(device)
            mem.reset(feats.to(device), lab_t)
            return mem

        self.mem_a = memory(self.model_a, f_a)
        self.mem_b = memory(self.model_b, f_b) if self.model_b is not None else None
        row["cluster_seconds"] = time.time() - te
        # ---- batches: global batches on every rank; each rank trains on its slice (distributed.shard_batch)
        # the code's anchor + other cameras (no modality quota), or K/2 per modality
        sampler_cls, groups = (
            (OtherCameraSampler, self.cams) if cfg.sampler == "other_cameras" else (CrossModalitySampler, self.is_ir)
        )
        sampler = sampler_cls(
            labels, groups, cfg.num_instances, cfg.batch_size, cfg.seed, cfg.iters_per_epoch, rank=0, world_size=1
        )
        sampler.set_epoch(epoch)
        return row, list(sampler.batches())

    def lr(self, epoch: int, i: int, n_batches: int) -> float:
        cfg = self.config
        return epoch_lr(cfg.lr, self.phase[0], i, n_batches, self.phase[1], cfg.warmup_epochs)

    def step(self, epoch: int, i: int, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        cfg, device = self.config, self.device
        idx_t = torch.as_tensor(idx)
        x = augment(to_float(gather_batch(self.images, idx_t, device, cfg.pin_memory)), cfg.augment, self.gen)
        x = to_memory_format(x, cfg.channels_last)
        xg = gray_of_normalised(x, cfg.gray_mode, self.gen) if self.model_b is not None else None
        y = self.y_all = self.lab_t[idx_t.to(device)]
        if distributed.is_distributed():  # this rank's slice of the global batch
            x, y = distributed.shard_batch(x), distributed.shard_batch(y)
            xg = distributed.shard_batch(xg) if xg is not None else None
        terms, self.upd = _step_losses(
            cfg,
            x,
            xg,
            y,
            self.train_a,
            self.train_b,
            self.mem_a,
            self.mem_b,
            self.ema_a,
            self.ema_b,
            self.kl_sym,
            self.dist,
            device,
        )
        loss = sum(terms.values())
        return loss, {**terms, "total": loss}

    def after_step(self) -> None:
        self.mem_a.update(self.upd[0], self.y_all)  # the global batch's features (gathered from every rank)
        if self.mem_b is not None:
            self.mem_b.update(self.upd[1], self.y_all)
        if self.ema_a is not None:
            ema_update(self.ema_a, self.model_a, self.config.ema_momentum)
            ema_update(self.ema_b, self.model_b, self.config.ema_momentum)
        self.upd = self.y_all = None

    def end_epoch(self, epoch: int, row: dict) -> None:
        last = epoch == self.epochs - 1
        every = self.eval_every > 0 and (epoch + 1) % self.eval_every == 0
        if self.eval_fn is None or not distributed.is_main() or not (last or every):
            return
        for mdl in self.nets:
            mdl.eval()
        with torch.no_grad():
            res = self.eval_fn(self.model_a, self.model_b)
        for mdl in self.nets:
            mdl.train()
        row.update(_flatten(res or {}, "eval_"))

    def extra_state(self) -> dict:
        overrides = self.label_overrides
        return {
            "labels": self.labels,
            "dbscan_counts": self.dbscan_counts,
            "label_overrides": None if overrides is None else dict(overrides),
            "init_fingerprint": self.init_fingerprint,
        }


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
    """Train stage 2 on unlabeled visible + infrared target images (:class:`SelfTrainStage`
    through :func:`cmamlib.training.driver.train`).

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
            :class:`cmamlib.training.driver.StopTraining` stops the run.
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
    stage = SelfTrainStage(config, target_records, images, init_models, progress, label_overrides, eval_fn, eval_every)
    res = train(stage, run_dir, resume, stage.progress, on_epoch_end)
    return SelfTrainResult(
        model_a=stage.model_a,
        model_b=stage.model_b,
        history=res.history,
        labels=stage.labels,
        seconds=res.seconds,
        images_per_second=res.n_seen / max(res.train_seconds, 1e-9),
        config=config,
    )


def selftrain_features(
    model_a: nn.Module,
    model_b: nn.Module | None,
    gray_mode: str = "random_channel",
    fusion: str = "concat",
    batch_size: int = 256,
    seed: int = 0,
    feature: str = "bnneck",
) -> FeatureFn:
    """Test-time feature function of a stage-2 pair: uint8 images ``(N, 3, H, W)`` ->
    ``fuse([L2(A(x)), L2(B(gray x))])`` ``(N, D)`` float32, L2-normalised, flip-averaged
    (:func:`cmamlib.training.loop.extract`; the random-channel gray view uses a generator
    seeded with ``seed``, so the same images always give the same features). With
    ``model_b=None``: A's features alone. ``feature``: ``"bnneck"`` (post-BNNeck, the
    eval-mode output) or ``"pre_bnneck"`` (the pooled GeM feature before the BNNeck;
    :func:`cmamlib.features.extract_features`). Runs on the device of ``model_a``.

    The code's reported feature is ``selftrain_features(model_a, None,
    feature="pre_bnneck")`` (``SelfTrainConfig.test_feature="a_pre_bnneck"``)."""
    dev = next(model_a.parameters()).device

    def fn(images: torch.Tensor) -> torch.Tensor:
        parts = [extract(model_a, images, dev, batch_size, feature=feature)]
        if model_b is not None:
            parts.append(extract(model_b, images, dev, batch_size, gray=gray_mode, seed=seed, feature=feature))
        return fuse(parts, fusion)

    return fn


def test_feature_fn(
    model_a: nn.Module,
    model_b: nn.Module | None,
    test_feature: str,
    gray_mode: str = "random_channel",
    fusion: str = "concat",
    batch_size: int = 256,
) -> FeatureFn:
    """The feature function named by ``SelfTrainConfig.test_feature``: ``"a_pre_bnneck"``
    (the code: model A alone, its pre-BNNeck GeM feature) or ``"fused"`` (``fusion`` of
    A's and B's post-BNNeck features, the clustering feature); :func:`selftrain_features`."""
    if test_feature == "a_pre_bnneck":
        return selftrain_features(model_a, None, batch_size=batch_size, feature="pre_bnneck")
    if test_feature == "fused":
        return selftrain_features(model_a, model_b, gray_mode, fusion, batch_size=batch_size)
    raise ValueError(f"test_feature={test_feature!r}: expected one of {TEST_FEATURES}")
