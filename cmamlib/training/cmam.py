"""Stage 1: CMAM, cross-modality asymmetric mutual learning on unlabeled visible source
images (docs/method.md, "Stage 1" and "What the authors' released code does").

Two networks:

* ``F_rg``, the RGB-gray extractor, fed the RGB view and the gray ("fake infrared")
  view of every image (``view_forward="separate"``, the default and the authors' code:
  two forwards, so BatchNorm normalises each view with its own batch statistics;
  ``"concat"``: one concatenated forward, the earlier reconstruction);
* ``F_g``, the auxiliary gray extractor, fed the gray view only.

Identity term (``identity_loss``):

* ``"classifier"`` (the authors' code): **fixed** labels read once from ``label_file``
  (:func:`cmamlib.training.source_labels.run_source_labels` makes one; noise images are
  left out), per branch a circle classifier (one per network, F_rg's two views share
  F_rg's) with label-smoothed cross entropy and a soft-margin batch-hard triplet on the
  post-BNNeck features; nothing is re-clustered, no memory;
* ``"memory"`` (the earlier reconstruction, described next).

Memory mode, per epoch: features of every source image, Jaccard + DBSCAN pseudo labels
(``label_space="shared"``: one label set from ``concat(F_rg(RGB), F_g(gray))``, as the
authors' code uses one label set for all branches; ``"per_network"``: each network
clusters its own features, the earlier reconstruction; or, with ``label_file``, another
unsupervised method's labels read once, as the authors used PPLR's), a cluster memory per network
(cluster-contrast, Dai et al. ACCV 2022) initialised at the cluster centroids, then P x K
batches with

* per branch: memory contrastive loss (+ optional batch-hard triplet),
* the asymmetric mutual terms, knowledge flowing ``F_rg(RGB) -> F_g(gray) -> F_rg(gray)``
  while ``F_rg(RGB)`` is never a student::

      L_rg2g = kl_w * symKL(z_g(gray), sg z_rg(RGB)) + sim_w * SIM(f_g(gray), sg f_rg(RGB))
      L_g2rg = kl_w * symKL(z_rg(gray), sg z_g(gray)) + sim_w * SIM(f_rg(gray), sg f_g(gray))
      L = L_mem + lambda_rg2g * L_rg2g + lambda_g2rg * L_g2rg

  with ``z`` the identity logits (circle-classifier logits, or memory cosine /
  temperature), ``f`` the BNNeck features, ``symKL`` (summed or batch mean,
  ``kl_reduction``) / ``SIM`` (summed) from :mod:`cmamlib.losses`, KL switched on after
  ``kl_start_fraction`` of the epochs. ``schedule="two_runs"`` (the authors' code):
  that point starts a second run from the first one's weights with a fresh optimizer
  and learning-rate schedule (:func:`two_run_lr_factor`); ``"one_run"``: one optimizer
  and one warm-up + cosine schedule over all epochs.

Defaults (:mod:`cmamlib.training.cmam_config`): :data:`CODE_DEFAULTS`, the values of
the authors' code, while :data:`FOLLOW_CODE_DEFAULTS` is True (it is);
:data:`EARLIER_DEFAULTS` keeps the earlier reconstruction's values.

Layout: the config in :mod:`.cmam_config`, the losses of a step in :mod:`.cmam_step`,
memory mode's per-epoch clustering in :mod:`.cmam_memory`, the loop (:func:`run_cmam`)
here; this module re-exports the config names.

Ablations (docs/method.md): ``symmetric`` (the RGB view is also a student of ``F_g``),
``tie_rgb_to_gray`` (an extra term pulling ``F_rg(RGB)`` towards ``F_rg(gray)``),
``use_aux_gray=False`` (no ``F_g``), ``use_gray_view=False`` (RGB only), ``ema``
(mean-teacher targets). Source identity labels are never read here: only image paths.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import distributed as dist
from ..clustering import label_quality
from ..data.label_files import file_sha256, read_label_file
from ..data.records import Record
from ..data.samplers import RandomIdentitySampler
from ..data.transforms import augment, gray_of_normalised, to_float
from ..losses import CircleClassifier, CrossEntropyLabelSmooth, SimilarityMatrixLoss, SymmetricKL, TripletLoss
from ..models import ReIDNet, build_model
from ..utils import resolve_device, seed_everything
from .cmam_config import CODE_DEFAULTS, EARLIER_DEFAULTS, FOLLOW_CODE_DEFAULTS, VARIANTS, CMAMConfig, variant_config
from .cmam_memory import memory_epoch, train_mode_features
from .cmam_step import step_losses, update_memories
from .common import gather_batch, make_optimizer, make_scaler, to_memory_format
from .driver import Stage, train, training_images
from .loop import ema_update, epoch_lr, make_ema

__all__ = [
    "CMAMConfig",
    "CMAMResult",
    "CMAMStage",
    "CODE_DEFAULTS",
    "EARLIER_DEFAULTS",
    "FOLLOW_CODE_DEFAULTS",
    "run_cmam",
    "train_mode_features",
    "two_run_lr_factor",
    "variant_config",
    "VARIANTS",
]


@dataclass
class CMAMResult:
    """Output of :func:`run_cmam`.

    Attributes:
        model_rg: ``F_rg`` (eval mode), the RGB-gray extractor.
        model_g: ``F_g`` (eval mode), or None without the auxiliary extractor.
        history: one dict per epoch (losses, cluster counts, diagnostics).
        labels: the last epoch's pseudo labels ``(N,)``.
        seconds / images_per_second: wall time of the run and training throughput
            (images per second of the training steps, feature extraction excluded).
        config: the config used.
        classifier_rg / classifier_g: classifier mode: the circle classifiers of F_rg /
            F_g (None otherwise).
    """

    model_rg: ReIDNet
    model_g: ReIDNet | None
    history: list[dict]
    labels: np.ndarray
    seconds: float
    images_per_second: float
    config: CMAMConfig
    classifier_rg: CircleClassifier | None = None
    classifier_g: CircleClassifier | None = None


def two_run_lr_factor(t: float, cfg: CMAMConfig) -> float:
    """Learning-rate multiplier at fraction ``t`` in ``[0, 1)`` of one run of
    ``schedule="two_runs"`` (fast-reid's warm-up + ``DelayedCosineAnnealingLR`` of the
    authors' code): linear from ``lr_warmup_factor`` to 1 over ``warmup_fraction``, 1
    until ``lr_flat_fraction``, then a cosine from 1 to ``lr_min_factor`` at ``t = 1``."""
    if t < cfg.warmup_fraction:
        a = t / cfg.warmup_fraction
        return cfg.lr_warmup_factor * (1 - a) + a
    if t < cfg.lr_flat_fraction:
        return 1.0
    span = max(1e-12, 1 - cfg.lr_flat_fraction)
    u = min(1.0, (t - cfg.lr_flat_fraction) / span)
    return cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * u))


def _step_lr(cfg: CMAMConfig, epoch: int, i: int, steps: int, run2: int) -> float:
    """The learning rate of step ``i`` of ``steps`` in ``epoch`` (``run2``: first epoch of
    the second run of ``schedule="two_runs"``)."""
    if cfg.schedule == "one_run":
        return epoch_lr(cfg.lr, epoch, i, steps, cfg.epochs, cfg.warmup_epochs)
    start, end = (0, run2) if epoch < run2 else (run2, cfg.epochs)
    t = (epoch - start + i / max(steps, 1)) / max(end - start, 1)
    return cfg.lr * two_run_lr_factor(t, cfg)


def _new_model(cfg: CMAMConfig, device: torch.device) -> ReIDNet:
    model = build_model(
        cfg.arch, width=cfg.width, last_stride=cfg.last_stride, non_local=cfg.non_local, pretrained=cfg.pretrained
    ).to(device)
    return to_memory_format(model, cfg.channels_last)


class CMAMStage(Stage):
    """Stage 1 as a :class:`cmamlib.training.driver.Stage`: the two networks (and, in
    classifier mode, their circle classifiers) over fixed labels or per-epoch clusters,
    the two-run schedule, memory and EMA updates after each step. :func:`run_cmam` is
    the entry point; the arguments are its own."""

    name = "cmam"
    desc = "stage 1"

    def __init__(
        self,
        config: CMAMConfig,
        source_records: Sequence[Record],
        images: torch.Tensor | None,
        progress: bool,
    ):
        cfg = self.config = config
        cfg.validate()
        if len(source_records) < 2:
            raise ValueError(f"run_cmam: need source images, got {len(source_records)} records")
        dist.check_batch_split(cfg.batch_size, cfg.num_instances, "stage 1: ")
        self.progress = progress = progress and dist.is_main()
        self.device = device = dist.local_device(resolve_device(cfg.device))
        self.images = training_images(source_records, images, cfg.image_size, progress, "source images")
        self.records = source_records
        self.true_ids = np.array([r.pid for r in source_records])  # diagnostics only
        self.cams = np.array([r.camid for r in source_records]) if cfg.camera_centering else None
        self.classifier = classifier = cfg.identity_loss == "classifier"
        if classifier and cfg.label_file is None:
            raise ValueError(
                "stage 1 with identity_loss='classifier' needs label_file: a path,label CSV of source pseudo labels "
                "(make one with `python -m cmamlib source-labels` or cmamlib.training.source_labels.run_source_labels, "
                "or give another method's, e.g. PPLR's), or identity_loss='memory' to re-cluster every epoch"
            )
        self.file_labels = read_label_file(cfg.label_file, source_records) if cfg.label_file is not None else None
        self.file_sha = file_sha256(cfg.label_file) if cfg.label_file is not None else None
        self.shared_labels = cfg.label_space == "shared" or self.file_labels is not None

        seed_everything(cfg.seed)
        self.model_rg = model_rg = _new_model(cfg, device)
        self.model_g = model_g = _new_model(cfg, device) if cfg.use_aux_gray else None
        if model_g is not None and cfg.shared_init:
            model_g.load_state_dict(model_rg.state_dict())  # the same start, as two copies of ImageNet weights
        self.nets = [m for m in (model_rg, model_g) if m is not None]
        if cfg.sync_bn:
            for m in self.nets:
                dist.convert_sync_batchnorm(m, device)
        self.cls_rg = self.cls_g = None
        if classifier:  # one circle classifier per network over the fixed labels (noise left out)
            n_cls = int(self.file_labels.max()) + 1
            if n_cls < 1:
                raise RuntimeError(f"stage 1: label_file {cfg.label_file} labels no image (all noise)")
            self.cls_rg = CircleClassifier(model_rg.feat_dim, n_cls, cfg.circle_scale, cfg.circle_margin).to(device)
            if model_g is not None:
                self.cls_g = CircleClassifier(model_g.feat_dim, n_cls, cfg.circle_scale, cfg.circle_margin).to(device)
        self.train_modules = self.nets + [c for c in (self.cls_rg, self.cls_g) if c is not None]
        self.eval_modules = self.nets
        self.params = [p for m in self.train_modules for p in m.parameters()]
        self.opt = make_optimizer(self.params, cfg.lr, cfg.weight_decay)
        self.scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
        self.ema_rg = make_ema(model_rg) if cfg.ema else None
        self.ema_g = make_ema(model_g) if (cfg.ema and model_g is not None) else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.labels = np.full(len(source_records), -1)
        self.modules = {"model_rg": model_rg, "model_g": model_g, "ema_rg": self.ema_rg, "ema_g": self.ema_g}
        if classifier:
            self.modules.update(classifier_rg=self.cls_rg, classifier_g=self.cls_g)
        self.buffer_modules = [model_rg, model_g, self.ema_rg, self.ema_g]
        self.kl = SymmetricKL(reduction="sum" if cfg.kl_reduction == "sum" else "batchmean")
        self.sim = SimilarityMatrixLoss("sum")
        self.tri = TripletLoss(cfg.triplet_margin)
        self.ce_ls = CrossEntropyLabelSmooth(cfg.label_smoothing)
        self.kl_from = int(np.ceil(cfg.kl_start_fraction * cfg.epochs))
        self.epochs = cfg.epochs

    def check_resume(self, state: dict, path: Path | None) -> None:
        if state.get("label_file_sha256") != self.file_sha:
            raise ValueError(
                f"cannot resume from {path}: label_file {self.config.label_file} changed since the run "
                "started (another SHA-256); use another run folder or resume=False"
            )

    def restore(self, state: dict) -> None:
        self.labels = state["labels"]

    def wrap(self) -> None:
        device = self.device
        self.train_rg = dist.wrap_ddp(self.model_rg, device)  # the bare models themselves in one process
        self.train_g = dist.wrap_ddp(self.model_g, device) if self.model_g is not None else None
        self.train_cls_rg = dist.wrap_ddp(self.cls_rg, device) if self.cls_rg is not None else None
        self.train_cls_g = dist.wrap_ddp(self.cls_g, device) if self.cls_g is not None else None

    def begin_epoch(self, epoch: int) -> tuple[dict, list[np.ndarray]]:
        cfg, device = self.config, self.device
        te = time.time()
        if cfg.schedule == "two_runs" and epoch == self.kl_from and epoch > 0:
            # run 2 of the code: run 1's weights, a fresh optimizer, scaler and schedule
            self.opt = make_optimizer(self.params, cfg.lr, cfg.weight_decay)
            self.scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
            for ema, m in ((self.ema_rg, self.model_rg), (self.ema_g, self.model_g)):
                if ema is not None:
                    ema.load_state_dict(m.state_dict())
        if self.classifier:  # fixed labels: no features, no clustering, no memory
            labels, labels_g = self.file_labels, self.file_labels
            self.mem_rg = self.mem_g = None
            row: dict = {"epoch": epoch, "phase": "fixed_labels", "cluster_seconds": time.time() - te}
            row.update({f"labels_{k}": v for k, v in label_quality(labels, self.true_ids).items()})
            row["label_file_sha256"] = self.file_sha
            p = cfg.batch_size // cfg.num_instances
            if int(labels.max()) + 1 < p:
                raise RuntimeError(
                    f"stage 1: label_file {cfg.label_file} has {int(labels.max()) + 1} labels, fewer than the P={p} "
                    "identities a batch needs; lower batch_size / num_instances"
                )
            instance_phase = False
        else:
            labels, labels_g, self.mem_rg, self.mem_g, row, instance_phase = memory_epoch(
                cfg,
                epoch,
                te,
                self.model_rg,
                self.model_g,
                self.images,
                device,
                self.progress,
                self.records,
                self.file_labels,
                self.file_sha,
                self.cams,
                self.true_ids,
                self.shared_labels,
            )
        self.labels = labels
        if cfg.schedule == "two_runs":
            row["run"] = 1 if epoch < self.kl_from else 2
        k = 1 if instance_phase else cfg.num_instances
        # global batches on every rank; each rank trains on its slice (dist.shard_batch)
        sampler = RandomIdentitySampler(labels, k, cfg.batch_size, cfg.seed, cfg.iters_per_epoch, rank=0, world_size=1)
        sampler.set_epoch(epoch)
        self.use_kl = cfg.kl_weight > 0 and epoch >= self.kl_from and self.shared_labels
        row["kl_on"] = self.use_kl
        self.lab_t = torch.from_numpy(labels).to(device)
        self.lab_g_t = torch.from_numpy(labels_g).to(device)
        self.heads = (self.train_cls_rg, self.train_cls_g) if self.classifier else (self.mem_rg, self.mem_g)
        return row, list(sampler.batches())

    def lr(self, epoch: int, i: int, n_batches: int) -> float:
        return _step_lr(self.config, epoch, i, n_batches, self.kl_from)

    def step(self, epoch: int, i: int, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        cfg, device = self.config, self.device
        idx_t = torch.as_tensor(idx)
        x = augment(to_float(gather_batch(self.images, idx_t, device, cfg.pin_memory)), cfg.augment, self.gen)
        x = to_memory_format(x, cfg.channels_last)
        xg = gray_of_normalised(x, cfg.gray_mode, self.gen) if cfg.use_gray_view else None
        y, y_g = self.lab_t[idx_t.to(device)], self.lab_g_t[idx_t.to(device)]
        if dist.is_distributed():  # this rank's slice of the global batch
            x, y, y_g = dist.shard_batch(x), dist.shard_batch(y), dist.shard_batch(y_g)
            xg = dist.shard_batch(xg) if xg is not None else None
        terms = step_losses(
            cfg,
            x,
            xg,
            y,
            y_g,
            self.train_rg,
            self.train_g,
            self.heads,
            self.ema_rg,
            self.ema_g,
            self.kl,
            self.sim,
            self.tri,
            self.ce_ls,
            self.use_kl,
            device,
        )
        self.terms = terms
        logged = {k: v for k, v in terms.items() if not k.startswith("_")}
        return sum(logged.values()), logged

    def after_step(self) -> None:
        if not self.classifier:
            update_memories(self.mem_rg, self.mem_g, self.terms)
        if self.ema_rg is not None:
            ema_update(self.ema_rg, self.model_rg, self.config.ema_momentum)
            if self.ema_g is not None:
                ema_update(self.ema_g, self.model_g, self.config.ema_momentum)
        self.terms = {}

    def extra_state(self) -> dict:
        return {"labels": self.labels, "label_file_sha256": self.file_sha}


def run_cmam(
    config: CMAMConfig,
    source_records: Sequence[Record],
    images: torch.Tensor | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> CMAMResult:
    """Train stage 1 on unlabeled source images (:class:`CMAMStage` through
    :func:`cmamlib.training.driver.train`).

    Args:
        config: :class:`CMAMConfig`.
        source_records: the source images; only ``path`` is used for training (the
            ``pid`` feeds the ARI/NMI/purity diagnostics of the log, nothing else).
        images: optional pre-decoded ``(N, 3, H, W)`` uint8 images of the records.
        run_dir: folder for ``log.jsonl`` and ``checkpoint.pt`` (written atomically
            after every epoch with the config); None keeps everything in memory.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists; the result
            equals that of an uninterrupted run with the same config.
        progress: progress bars.
        on_epoch_end: ``hook(epoch, log_row)`` after the epoch's checkpoint.

    Distributed (a process group initialised, e.g. by ``torchrun`` and
    :func:`cmamlib.distributed.init_from_env`): every rank calls this with the same
    arguments; see :mod:`cmamlib.distributed` for what is split, gathered and synced.
    Rank 0 writes the run folder; every rank returns the same models.

    Returns:
        :class:`CMAMResult`.
    """
    stage = CMAMStage(config, source_records, images, progress)
    res = train(stage, run_dir, resume, stage.progress, on_epoch_end)
    return CMAMResult(
        model_rg=stage.model_rg,
        model_g=stage.model_g,
        history=res.history,
        labels=stage.labels,
        seconds=res.seconds,
        images_per_second=res.n_seen / max(res.train_seconds, 1e-9),
        config=config,
        classifier_rg=stage.cls_rg,
        classifier_g=stage.cls_g,
    )
