"""Stage 1: CMAM, cross-modality asymmetric mutual learning on unlabeled visible source
images (docs/method.md, "Stage 1" and "What the authors' released code does").

Two networks:

* ``F_rg``, the RGB-gray extractor, fed the RGB view and the gray ("fake infrared")
  view of every image (one concatenated forward; ``view_forward="separate"``: two, as
  the authors' code, so BatchNorm normalises each view with its own batch statistics);
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

Defaults: the dataclass defaults are the earlier ones (the notebooks' numbers);
:data:`CODE_DEFAULTS` holds the values of the authors' code and
:data:`FOLLOW_CODE_DEFAULTS` switches the dataclass defaults to them.

Ablations (docs/method.md): ``symmetric`` (the RGB view is also a student of ``F_g``),
``tie_rgb_to_gray`` (an extra term pulling ``F_rg(RGB)`` towards ``F_rg(gray)``),
``use_aux_gray=False`` (no ``F_g``), ``use_gray_view=False`` (RGB only), ``ema``
(mean-teacher targets). Source identity labels are never read here: only image paths.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed as dist
from ..clustering import label_quality, pseudo_labels
from ..data.label_files import file_sha256, read_label_file
from ..data.loading import load_images
from ..data.loading import normalize as normalize_images
from ..data.records import Record
from ..data.samplers import RandomIdentitySampler
from ..data.transforms import AugmentConfig, augment, gray_of_normalised, to_float
from ..losses import CircleClassifier, CrossEntropyLabelSmooth, SimilarityMatrixLoss, SymmetricKL, TripletLoss
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
)
from .loop import (
    ema_update,
    epoch_lr,
    extract,
    fuse,
    gray_transform,
    make_ema,
    restore_training_state,
    training_state,
)

__all__ = [
    "CMAMConfig",
    "CMAMResult",
    "CODE_DEFAULTS",
    "FOLLOW_CODE_DEFAULTS",
    "run_cmam",
    "two_run_lr_factor",
    "VARIANTS",
]

#: The stage-1 values of the authors' released code where they differ from the earlier
#: defaults (docs/method.md, "Where the defaults still differ from the code").
CODE_DEFAULTS: dict = {
    "identity_loss": "classifier",  # fixed labels + circle classifier, no re-clustering, no memory
    "view_forward": "separate",  # F_rg's two views in two forwards
    "kl_reduction": "sum",  # KL summed over the batch and the classes
    "schedule": "two_runs",  # run 1 without KL, run 2 from its weights with a fresh optimizer
    "triplet_weight": 1.0,  # the triplet of every branch
    "triplet_margin": None,  # soft margin
    "triplet_feature": "post_bn",  # on the BNNeck features (fast-reid NECK_FEAT "after")
    "memory_init": "train",  # memory mode only: memories from train-mode features
    "test_feature": "pre_bnneck",  # reported feature: F_rg's pooled GeM feature before the BNNeck
}

#: The defaults before :data:`CODE_DEFAULTS` (what the notebooks' numbers were made with).
EARLIER_DEFAULTS: dict = {
    "identity_loss": "memory",
    "view_forward": "concat",
    "kl_reduction": "mean",
    "schedule": "one_run",
    "triplet_weight": 0.0,
    "triplet_margin": 0.3,
    "triplet_feature": "pre_bn",
    "memory_init": "eval",
    "test_feature": "bnneck",
}

#: The one switch: True makes :data:`CODE_DEFAULTS` the defaults of :class:`CMAMConfig`
#: (classifier mode then needs ``label_file``, which ``experiments.stage1_run`` makes).
FOLLOW_CODE_DEFAULTS = True


def _default(name: str):
    return (CODE_DEFAULTS if FOLLOW_CODE_DEFAULTS else EARLIER_DEFAULTS)[name]


@dataclass
class CMAMConfig:
    """Stage-1 configuration. Defaults: the CPU synthetic preset; the paper-scale values
    are in docs/method.md ("Defaults at paper scale"). Fields marked *reconstruction* are
    choices neither the paper's abstract nor its code settles.

    Attributes:
        arch / width / last_stride / non_local / pretrained: backbone
            (:func:`cmamlib.models.build_model`; ``non_local``: AGW non-local blocks, the
            authors' ResNet-50; ``pretrained``: ImageNet weights file in torchvision keys,
            both networks).
        image_size: ``(H, W)``; the authors use 384x128.
        batch_size / num_instances: P x K batches over pseudo labels (authors 64 = 4 x 16).
        epochs / iters_per_epoch: epochs of re-clustering and batches per epoch (None =
            one pass over the pseudo-labelled images; fixed 50 here, because a pass over
            few large clusters can be a handful of batches). CPU default 8 x 50 steps.
        lr / weight_decay / warmup_epochs: Adam, 5e-4, warm-up then cosine. CPU default
            lr 3.5e-3 (from random init in a few hundred steps; the supervised
            calibration needed it: at 3.5e-4 its classifier stayed near chance); the
            authors fine-tune ImageNet weights at 3.5e-4.
        identity_loss: ``"classifier"`` (the code: fixed ``label_file`` labels, circle
            classifier + CE with label smoothing + triplet, nothing re-clustered; needs
            ``label_file``) or ``"memory"`` (the earlier reconstruction: cluster memory,
            re-clustered every epoch unless ``label_file`` is given).
        circle_scale / circle_margin / label_smoothing: the classifier's ``s`` and ``m``
            (64, 0.35) and the CE smoothing (0.1), all the code's.
        label_space: memory mode: ``"shared"`` (default, one label set, as the code) or
            ``"per_network"`` (reconstruction).
        label_file: a ``path,label`` CSV of source pseudo labels made by another
            unsupervised method (:mod:`cmamlib.data.label_files`;
            :func:`cmamlib.training.source_labels.run_source_labels` makes one), read
            once and used by every branch and epoch instead of re-clustering, as the
            authors used PPLR's labels on Market-1501; None (memory mode only) clusters
            every epoch (``label_space``).
        k1 / k2 / eps / min_samples: Jaccard + DBSCAN (cluster-contrast on Market-1501:
            30, 6, 0.6, 4; CPU default 15, 6, 0.5, 4 because Market-1501-synth has about
            8 images per identity instead of 17).
        temperature / memory_momentum / memory_mode: cluster memory (0.05, 0.2, "mean";
            *reconstruction*: the code uses a circle classifier on fixed labels).
        memory_init: memory mode: the features the memories are re-initialised from each
            epoch: ``"eval"`` (the earlier default: the eval-mode, flip-averaged features
            of the clustering) or ``"train"`` (train-mode BNNeck features, batch
            statistics, no flip: eval-mode statistics of a drifting network feed a
            collapse loop, docs/method.md).
        gray_mode: ``"random_channel"`` (default, the code) or ``"luma"``.
        view_forward: how ``F_rg`` sees its two views in training: ``"concat"`` (earlier
            default, *reconstruction*: one forward of the concatenated batch, BatchNorm statistics
            over both views) or ``"separate"`` (two forwards, as the authors' code: each
            view normalised by its own batch statistics; the paper presets). Measured
            here from random init (``investigations/probe_stage2_length.py --set1
            view_forward=separate``, ``reports/probes/stage2_view_forward_separate.json``):
            the full method after stage 2 gets 12.9 ± 1.2 all-search mAP with
            ``"separate"`` against 18.1 ± 1.2 (seeds 0 / 1), so the CPU default stays.
        use_gray_view / use_aux_gray: ablations (i) RGB only, (ii) one network.
        kl_weight / sim_weight / kl_start_fraction: mutual terms (0.1, 0.5, 0.5: the code);
            KL from epoch ``ceil(kl_start_fraction * epochs)``.
        kl_reduction: ``"sum"`` (the code: summed over the batch and the classes) or
            ``"mean"`` (the earlier default: summed over the classes, batch mean). SIM is
            always summed over the ``B x B`` entries (the code).
        schedule: ``"two_runs"`` (the code: the KL start ends run 1; run 2 starts from
            run 1's weights with a fresh optimizer, AMP scaler and learning-rate schedule,
            EMA copies reset to the weights) or ``"one_run"`` (earlier default: one
            optimizer, warm-up over ``warmup_epochs`` then cosine over all epochs).
        warmup_fraction / lr_flat_fraction / lr_warmup_factor / lr_min_factor:
            ``"two_runs"``: each run warms up linearly from ``lr_warmup_factor`` x lr
            over ``warmup_fraction`` of its steps, stays flat until ``lr_flat_fraction``,
            then decays by a cosine to ``lr_min_factor`` x lr (the code: 2000 / 15000,
            9000 / 15000, 0.01, 7.7e-7 / 3.5e-4; :func:`two_run_lr_factor`).
        lambda_rg2g / lambda_g2rg: per-direction scales (1.0 each).
        rg2g_teacher_view: ``"rgb"`` (the code) or ``"gray"`` (*reconstruction*).
        symmetric: ablation (iii): the RGB view of F_rg is also a student of F_g.
        tie_rgb_to_gray / tie_weight: ablation (v): pull F_rg(RGB) towards F_rg(gray).
        triplet_weight / triplet_margin / triplet_feature: batch-hard triplet per branch
            (0: off; the code: 1), hinge margin (0.3) or None for the soft margin (the
            code), on ``"pre_bn"`` pooled features (earlier default) or ``"post_bn"``
            BNNeck features (the code).
        instance_epochs: first epochs in which every image is its own class
            (instance discrimination through the same memories and mutual terms, the
            un-clustered-instance idea of SpCL, Ge et al. NeurIPS 2020) before
            re-clustering starts. *Reconstruction* for training from random init, where
            no ImageNet weights give the first clustering its meaning; 0 = off.
        camera_centering: centre the features per camera before clustering
            (:func:`cmamlib.clustering.camera_centre`; camera ids come from the file
            names, no identity label). *Reconstruction*: measured on the synthetic
            benchmark, random-init features cluster by camera (95% camera purity,
            14% identity purity at eps 0.6) and centring raises identity purity.
        shared_init: ``F_g`` starts as a copy of ``F_rg``'s initial weights (default). The
            authors initialise both networks from the same ImageNet weights, so their
            mutual terms start between two nearly equal networks; from random init, two
            independently drawn networks start with unrelated similarity matrices and the
            summed SIM term (weight 0.5) swamps the memory loss (measured in notebook 02:
            source mAP 8.4 independent vs 21.1 shared, seed 0). *Reconstruction* of the
            identical start for random init; False = independent draws (the ablation
            ``cmam_independent_init``). With ``pretrained`` both load the same file.
        ema / ema_momentum: mean-teacher targets for the mutual terms (off; 0.999).
        fusion: how the shared label space fuses the two networks' features.
        augment: crop / flip / erasing (both views share them).
        seed / device / amp: reproducibility and hardware.
        amp_dtype / channels_last / pin_memory: GPU options, as documented in
            :class:`cmamlib.training.supervised.SupervisedConfig`.
        knn_backend: kNN of the Jaccard distance: ``"torch"`` (exact chunked top-k on the
            CPU, default), ``"faiss"`` (needs ``pip install faiss-cpu`` or ``faiss-gpu``;
            never required) or ``"auto"`` (faiss when importable).
        eval_batch_size: inference batch.
        test_feature: the direct-transfer feature reported for F_rg (notebooks 01 / 02,
            ``experiments.stage1_metrics``), flip-averaged and L2-normalised:
            ``"pre_bnneck"`` (the code: the pooled GeM feature before the BNNeck) or
            ``"bnneck"`` (earlier default: after it). Not a training field.
        sync_bn: distributed runs (``torchrun``) only: BatchNorm statistics over the
            global batch of all ranks instead of each rank's slice
            (:func:`cmamlib.distributed.convert_sync_batchnorm`); no effect in one process.
    """

    arch: str = "resnet18"
    width: int = 16
    last_stride: int = 1
    non_local: bool = False
    pretrained: str | None = None
    image_size: tuple[int, int] = (64, 32)
    batch_size: int = 64
    num_instances: int = 4
    epochs: int = 8
    iters_per_epoch: int | None = 50
    lr: float = 3.5e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    identity_loss: str = _default("identity_loss")
    circle_scale: float = 64.0
    circle_margin: float = 0.35
    label_smoothing: float = 0.1
    label_space: str = "shared"
    label_file: str | None = None
    k1: int = 15
    k2: int = 6
    eps: float = 0.5
    min_samples: int = 4
    temperature: float = 0.05
    memory_momentum: float = 0.2
    memory_mode: str = "mean"
    memory_init: str = _default("memory_init")
    gray_mode: str = "random_channel"
    view_forward: str = _default("view_forward")
    use_gray_view: bool = True
    use_aux_gray: bool = True
    kl_weight: float = 0.1
    sim_weight: float = 0.5
    kl_start_fraction: float = 0.5
    kl_reduction: str = _default("kl_reduction")
    schedule: str = _default("schedule")
    warmup_fraction: float = 2000 / 15000
    lr_flat_fraction: float = 9000 / 15000
    lr_warmup_factor: float = 0.01
    lr_min_factor: float = 7.7e-7 / 3.5e-4
    lambda_rg2g: float = 1.0
    lambda_g2rg: float = 1.0
    rg2g_teacher_view: str = "rgb"
    symmetric: bool = False
    tie_rgb_to_gray: bool = False
    tie_weight: float = 1.0
    triplet_weight: float = _default("triplet_weight")
    triplet_margin: float | None = _default("triplet_margin")
    triplet_feature: str = _default("triplet_feature")
    instance_epochs: int = 0
    camera_centering: bool = True
    shared_init: bool = True
    ema: bool = False
    ema_momentum: float = 0.999
    fusion: str = "concat"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = False
    pin_memory: bool = True
    knn_backend: str = "torch"
    eval_batch_size: int = 256
    sync_bn: bool = False
    test_feature: str = _default("test_feature")

    def resume_strict_fields(self) -> tuple[str, ...]:
        """Fields added with a default that changed this config's behaviour: a checkpoint
        written before them is another run (:func:`cmamlib.training.common.check_resume_config`).
        ``shared_init`` matters only with ``F_g``; with :data:`FOLLOW_CODE_DEFAULTS` the
        fields of :data:`CODE_DEFAULTS` (a checkpoint without them ran the earlier ones)."""
        strict = ("shared_init",) if self.use_aux_gray else ()
        if FOLLOW_CODE_DEFAULTS:
            strict += tuple(k for k in CODE_DEFAULTS if k != "test_feature")
        return strict

    def validate(self) -> None:
        check_amp_dtype(self.amp_dtype)
        if self.knn_backend not in ("torch", "faiss", "auto"):
            raise ValueError(f"knn_backend={self.knn_backend!r}: expected 'torch', 'faiss' or 'auto'")
        choices = {
            "identity_loss": ("classifier", "memory"),
            "kl_reduction": ("sum", "mean"),
            "schedule": ("one_run", "two_runs"),
            "triplet_feature": ("pre_bn", "post_bn"),
            "memory_init": ("eval", "train"),
            "test_feature": ("pre_bnneck", "bnneck"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {list(allowed)}")
        if self.identity_loss == "classifier" and self.instance_epochs:
            raise ValueError("instance_epochs needs identity_loss='memory' (the classifier trains on fixed labels)")
        if not 0 <= self.warmup_fraction <= self.lr_flat_fraction <= 1:
            raise ValueError(
                f"warmup_fraction={self.warmup_fraction}, lr_flat_fraction={self.lr_flat_fraction}: "
                "expected 0 <= warmup_fraction <= lr_flat_fraction <= 1"
            )
        if self.label_space not in ("shared", "per_network"):
            raise ValueError(f"label_space={self.label_space!r}: expected 'shared' or 'per_network'")
        if self.view_forward not in ("concat", "separate"):
            raise ValueError(f"view_forward={self.view_forward!r}: expected 'concat' or 'separate'")
        if self.rg2g_teacher_view not in ("rgb", "gray"):
            raise ValueError(f"rg2g_teacher_view={self.rg2g_teacher_view!r}: expected 'rgb' or 'gray'")
        if self.use_aux_gray and not self.use_gray_view:
            raise ValueError("use_aux_gray=True needs use_gray_view=True (F_g is fed the gray view)")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: expected >= 1")
        if not 0 <= self.kl_start_fraction <= 1:
            raise ValueError(f"kl_start_fraction={self.kl_start_fraction}: expected in [0, 1]")


#: The stage-1 variants of the ablation table (notebook 02), as config overrides.
VARIANTS: dict[str, dict] = {
    "rgb_only": {"use_gray_view": False, "use_aux_gray": False},
    "rgb_gray_one_net": {"use_aux_gray": False},
    "symmetric": {"symmetric": True},
    "cmam": {},
    "cmam_tie_rgb_to_gray": {"tie_rgb_to_gray": True},
    # investigation (notebook 02): a tenth of the code's SIM weight 0.5 on a summed 64 x 64
    # matrix (which dominates the memory loss from independently drawn random networks)
    "cmam_sim005": {"sim_weight": 0.05},
    # F_g drawn independently of F_rg instead of starting as its copy (the default before
    # shared_init; the authors start both from the same ImageNet weights)
    "cmam_independent_init": {"shared_init": False},
}


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


@torch.no_grad()
def train_mode_features(
    model: ReIDNet,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    gray: str | None = None,
    seed: int = 0,
    amp: bool = False,
    amp_dtype: str = "float16",
) -> torch.Tensor:
    """L2-normalised train-mode BNNeck features ``(N, D)`` (BatchNorm on each batch's own
    statistics, no flip) of uint8 images, in order; ``gray``: a gray mode to feed the
    gray view (seeded, as :func:`cmamlib.training.loop.extract`). The BatchNorm running
    statistics and the model's mode are left as they were. Batches are split evenly so
    that none holds a single image (train-mode BatchNorm needs two)."""
    n = images.shape[0]
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    tf = gray_transform(gray, seed) if gray else None
    chunks = np.array_split(np.arange(n), max(1, int(np.ceil(n / max(batch_size, 2)))))
    out = []
    try:
        for idx in chunks:
            x = to_float(images[torch.as_tensor(idx)].to(device))
            if tf is not None:
                x = tf(x)
            with autocast(device, amp, amp_dtype):
                f = model(normalize_images(x)).bn_feat
            out.append(F.normalize(f.float(), dim=1).cpu())
    finally:
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
        model.train(was_training)
    return torch.cat(out)


def _new_model(cfg: CMAMConfig, device: torch.device) -> ReIDNet:
    model = build_model(
        cfg.arch, width=cfg.width, last_stride=cfg.last_stride, non_local=cfg.non_local, pretrained=cfg.pretrained
    ).to(device)
    return to_memory_format(model, cfg.channels_last)


def run_cmam(
    config: CMAMConfig,
    source_records: Sequence[Record],
    images: torch.Tensor | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> CMAMResult:
    """Train stage 1 on unlabeled source images.

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
    cfg = config
    cfg.validate()
    if len(source_records) < 2:
        raise ValueError(f"run_cmam: need source images, got {len(source_records)} records")
    dist.check_batch_split(cfg.batch_size, cfg.num_instances, "stage 1: ")
    progress = progress and dist.is_main()
    device = dist.local_device(resolve_device(cfg.device))
    if images is None:
        images = load_images(source_records, cfg.image_size, progress=progress, desc="source images")
    if images.shape[0] != len(source_records):
        raise ValueError(f"images has {images.shape[0]} rows for {len(source_records)} records")
    true_ids = np.array([r.pid for r in source_records])  # diagnostics only
    cams = np.array([r.camid for r in source_records]) if cfg.camera_centering else None
    classifier = cfg.identity_loss == "classifier"
    if classifier and cfg.label_file is None:
        raise ValueError(
            "stage 1 with identity_loss='classifier' needs label_file: a path,label CSV of source pseudo labels "
            "(make one with `python -m cmamlib source-labels` or cmamlib.training.source_labels.run_source_labels, "
            "or give another method's, e.g. PPLR's), or identity_loss='memory' to re-cluster every epoch"
        )
    file_labels = read_label_file(cfg.label_file, source_records) if cfg.label_file is not None else None
    file_sha = file_sha256(cfg.label_file) if cfg.label_file is not None else None
    shared_labels = cfg.label_space == "shared" or file_labels is not None

    seed_everything(cfg.seed)
    model_rg = _new_model(cfg, device)
    model_g = _new_model(cfg, device) if cfg.use_aux_gray else None
    if model_g is not None and cfg.shared_init:
        model_g.load_state_dict(model_rg.state_dict())  # the same start, as two copies of ImageNet weights
    nets = [m for m in (model_rg, model_g) if m is not None]
    if cfg.sync_bn:
        for m in nets:
            dist.convert_sync_batchnorm(m, device)
    cls_rg = cls_g = None
    if classifier:  # one circle classifier per network over the fixed labels (noise left out)
        n_cls = int(file_labels.max()) + 1
        if n_cls < 1:
            raise RuntimeError(f"stage 1: label_file {cfg.label_file} labels no image (all noise)")
        cls_rg = CircleClassifier(model_rg.feat_dim, n_cls, cfg.circle_scale, cfg.circle_margin).to(device)
        if model_g is not None:
            cls_g = CircleClassifier(model_g.feat_dim, n_cls, cfg.circle_scale, cfg.circle_margin).to(device)
    trained = nets + [c for c in (cls_rg, cls_g) if c is not None]
    params = [p for m in trained for p in m.parameters()]
    opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
    scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
    ema_rg = make_ema(model_rg) if cfg.ema else None
    ema_g = make_ema(model_g) if (cfg.ema and model_g is not None) else None
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = Checkpointer(run_dir if dist.is_main() else None)  # rank 0 writes
    logger = JsonlLogger(None if run_dir is None or not dist.is_main() else Path(run_dir) / "log.jsonl")
    start_epoch = 0
    if run_dir is not None and not resume:
        logger.start_fresh()  # a fresh run replaces an old log
    train_seconds, n_seen = 0.0, 0
    labels = np.full(len(source_records), -1)
    modules = {"model_rg": model_rg, "model_g": model_g, "ema_rg": ema_rg, "ema_g": ema_g}
    if classifier:
        modules.update(classifier_rg=cls_rg, classifier_g=cls_g)
    if resume and (state := dist.run_on_main(ckpt.load)) is not None:
        check_resume_config(state, cfg, ckpt.path)
        if state.get("label_file_sha256") != file_sha:
            raise ValueError(
                f"cannot resume from {ckpt.path}: label_file {cfg.label_file} changed since the run "
                "started (another SHA-256); use another run folder or resume=False"
            )
        restore_training_state(state, modules, opt, scaler, gen)
        start_epoch = int(state["epoch"]) + 1
        train_seconds, n_seen, labels = state["train_seconds"], state["n_seen"], state["labels"]
        logger.truncate_to(start_epoch)
    train_rg = dist.wrap_ddp(model_rg, device)  # the bare models themselves in one process
    train_g = dist.wrap_ddp(model_g, device) if model_g is not None else None
    train_cls_rg = dist.wrap_ddp(cls_rg, device) if cls_rg is not None else None
    train_cls_g = dist.wrap_ddp(cls_g, device) if cls_g is not None else None

    kl = SymmetricKL(reduction="sum" if cfg.kl_reduction == "sum" else "batchmean")
    sim = SimilarityMatrixLoss("sum")
    tri = TripletLoss(cfg.triplet_margin)
    ce_ls = CrossEntropyLabelSmooth(cfg.label_smoothing)
    kl_from = int(np.ceil(cfg.kl_start_fraction * cfg.epochs))
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        te = time.time()
        if cfg.schedule == "two_runs" and epoch == kl_from and epoch > 0:
            # run 2 of the code: run 1's weights, a fresh optimizer, scaler and schedule
            opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
            scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
            for ema, m in ((ema_rg, model_rg), (ema_g, model_g)):
                if ema is not None:
                    ema.load_state_dict(m.state_dict())
        if classifier:  # fixed labels: no features, no clustering, no memory
            labels, labels_g = file_labels, file_labels
            mem_rg = mem_g = None
            row: dict = {"epoch": epoch, "phase": "fixed_labels", "cluster_seconds": time.time() - te}
            row.update({f"labels_{k}": v for k, v in label_quality(labels, true_ids).items()})
            row["label_file_sha256"] = file_sha
            p = cfg.batch_size // cfg.num_instances
            if int(labels.max()) + 1 < p:
                raise RuntimeError(
                    f"stage 1: label_file {cfg.label_file} has {int(labels.max()) + 1} labels, fewer than the P={p} "
                    "identities a batch needs; lower batch_size / num_instances"
                )
            instance_phase = False
        else:
            labels, labels_g, mem_rg, mem_g, row, instance_phase = _memory_epoch(
                cfg,
                epoch,
                te,
                model_rg,
                model_g,
                images,
                device,
                progress,
                source_records,
                file_labels,
                file_sha,
                cams,
                true_ids,
                shared_labels,
            )
        if cfg.schedule == "two_runs":
            row["run"] = 1 if epoch < kl_from else 2

        # ---- training ----------------------------------------------------------------
        k = 1 if instance_phase else cfg.num_instances
        # global batches on every rank; each rank trains on its slice (dist.shard_batch)
        sampler = RandomIdentitySampler(labels, k, cfg.batch_size, cfg.seed, cfg.iters_per_epoch, rank=0, world_size=1)
        sampler.set_epoch(epoch)
        batches = list(sampler.batches())
        use_kl = cfg.kl_weight > 0 and epoch >= kl_from and shared_labels
        for m in trained:
            m.train()
        lab_t = torch.from_numpy(labels).to(device)
        lab_g_t = torch.from_numpy(labels_g).to(device)
        heads = (train_cls_rg, train_cls_g) if classifier else (mem_rg, mem_g)
        sums: dict[str, float] = {}
        ts, seen0 = time.time(), n_seen
        for i, idx in enumerate(
            tqdm(batches, desc=f"stage 1 epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        ):
            idx_t = torch.as_tensor(idx)
            x = augment(to_float(gather_batch(images, idx_t, device, cfg.pin_memory)), cfg.augment, gen)
            x = to_memory_format(x, cfg.channels_last)
            xg = gray_of_normalised(x, cfg.gray_mode, gen) if cfg.use_gray_view else None
            y, y_g = lab_t[idx_t.to(device)], lab_g_t[idx_t.to(device)]
            if dist.is_distributed():  # this rank's slice of the global batch
                x, y, y_g = dist.shard_batch(x), dist.shard_batch(y), dist.shard_batch(y_g)
                xg = dist.shard_batch(xg) if xg is not None else None
            set_lr(opt, _step_lr(cfg, epoch, i, len(batches), kl_from))
            terms = _step_losses(
                cfg, x, xg, y, y_g, train_rg, train_g, heads, ema_rg, ema_g, kl, sim, tri, ce_ls, use_kl, device
            )
            loss = sum(v for k, v in terms.items() if not k.startswith("_"))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if not classifier:
                _update_memories(mem_rg, mem_g, terms)
            if ema_rg is not None:
                ema_update(ema_rg, model_rg, cfg.ema_momentum)
                if ema_g is not None:
                    ema_update(ema_g, model_g, cfg.ema_momentum)
            n_seen += len(idx)
            for k, v in terms.items():
                if not k.startswith("_"):
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
        epoch_train_seconds = time.time() - ts
        train_seconds += epoch_train_seconds
        sums = dist.all_reduce_mean(sums)  # the global-batch means (identity in one process)
        row.update({f"loss_{k}": v / max(len(batches), 1) for k, v in sums.items()})
        row.update({"batches": len(batches), "kl_on": use_kl, "lr_end": opt.param_groups[0]["lr"]})
        row["seconds"] = time.time() - te
        row["train_images_per_second"] = (n_seen - seen0) / max(epoch_train_seconds, 1e-9)
        if dist.is_distributed():  # BN running stats of rank 0 everywhere, then prove the ranks agree
            dist.sync_buffers([model_rg, model_g, ema_rg, ema_g])
            row["world_size"] = dist.world_size()
            row["rank_state_hashes"] = dist.all_gather_object(dist.state_hash(modules))
        logger.log(row)
        state = {
            **training_state(modules, opt, scaler, gen),
            "epoch": epoch,
            "labels": labels,
            "train_seconds": train_seconds,
            "n_seen": n_seen,
            "config": config_to_dict(cfg),
            "label_file_sha256": file_sha,
            "stage": "cmam",
        }
        ckpt.save(state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    for m in nets:
        m.eval()
    logger.close()
    secs = time.time() - t0
    return CMAMResult(
        model_rg=model_rg,
        model_g=model_g,
        history=logger.rows,
        labels=labels,
        seconds=secs,
        images_per_second=n_seen / max(train_seconds, 1e-9),
        config=cfg,
        classifier_rg=cls_rg,
        classifier_g=cls_g,
    )


def _memory_epoch(
    cfg: CMAMConfig,
    epoch: int,
    te: float,
    model_rg: ReIDNet,
    model_g: ReIDNet | None,
    images: torch.Tensor,
    device: torch.device,
    progress: bool,
    source_records: Sequence[Record],
    file_labels: np.ndarray | None,
    file_sha: str | None,
    cams: np.ndarray | None,
    true_ids: np.ndarray,
    shared_labels: bool,
):
    """Memory mode, start of an epoch: features, pseudo labels (or the file's), and the
    two cluster memories initialised at the cluster centroids. Returns ``(labels,
    labels_g, mem_rg, mem_g, log_row, instance_phase)``."""
    f_rgb = extract(
        model_rg,
        images,
        device,
        cfg.eval_batch_size,
        amp=cfg.amp,
        amp_dtype=cfg.amp_dtype,
        progress=progress,
        desc="features F_rg",
        distributed=True,
    )
    f_gray = (
        extract(
            model_g,
            images,
            device,
            cfg.eval_batch_size,
            gray=cfg.gray_mode,
            seed=cfg.seed * 1000 + epoch,
            amp=cfg.amp,
            amp_dtype=cfg.amp_dtype,
            progress=progress,
            desc="features F_g",
            distributed=True,
        )
        if model_g is not None
        else None
    )
    instance_phase = epoch < cfg.instance_epochs

    def _pseudo_labels() -> tuple[np.ndarray, np.ndarray]:  # on rank 0 in a distributed run
        if instance_phase:  # every image its own class (instance discrimination warm-up)
            labels = np.arange(len(source_records))
            labels_g = labels
        elif file_labels is not None:  # another method's labels, read once (the authors: PPLR's)
            labels = labels_g = file_labels
        elif cfg.label_space == "shared":
            labels = pseudo_labels(
                fuse([f for f in (f_rgb, f_gray) if f is not None], cfg.fusion),
                cfg.k1,
                cfg.k2,
                cfg.eps,
                cfg.min_samples,
                camids=cams,
                knn_backend=cfg.knn_backend,
            )
            labels_g = labels
        else:
            labels = pseudo_labels(
                f_rgb, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, camids=cams, knn_backend=cfg.knn_backend
            )
            labels_g = (
                pseudo_labels(
                    f_gray, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, camids=cams, knn_backend=cfg.knn_backend
                )
                if f_gray is not None
                else labels
            )
        return labels, labels_g

    labels, labels_g = dist.run_on_main(_pseudo_labels)
    n_clusters = int(labels.max()) + 1
    p = cfg.batch_size // cfg.num_instances
    if n_clusters < p and file_labels is not None and not instance_phase:
        raise RuntimeError(
            f"stage 1: label_file {cfg.label_file} has {n_clusters} labels, fewer than the P={p} "
            "identities a batch needs; lower batch_size / num_instances"
        )
    if n_clusters < p:
        raise RuntimeError(
            f"stage 1, epoch {epoch}: DBSCAN found {n_clusters} clusters in {len(labels)} source images "
            f"({float((labels < 0).mean()):.0%} noise), fewer than the P={p} identities a batch needs; "
            f"raise eps (now {cfg.eps}), lower min_samples ({cfg.min_samples}) or batch_size / num_instances"
        )
    if cfg.memory_init == "train":  # memories from train-mode features, the clustering's stay eval-mode
        kw = dict(amp=cfg.amp, amp_dtype=cfg.amp_dtype)
        f_rgb = train_mode_features(model_rg, images, device, cfg.eval_batch_size, **kw)
        if model_g is not None:
            f_gray = train_mode_features(
                model_g, images, device, cfg.eval_batch_size, gray=cfg.gray_mode, seed=cfg.seed * 1000 + epoch, **kw
            )
    mem_rg = ClusterMemory(model_rg.feat_dim, n_clusters, cfg.temperature, cfg.memory_momentum, cfg.memory_mode).to(
        device
    )
    mem_rg.reset(f_rgb.to(device), torch.from_numpy(labels).to(device))
    mem_g = None
    if model_g is not None:
        mem_g = ClusterMemory(
            model_g.feat_dim, int(labels_g.max()) + 1, cfg.temperature, cfg.memory_momentum, cfg.memory_mode
        ).to(device)
        mem_g.reset(f_gray.to(device), torch.from_numpy(labels_g).to(device))
    row: dict = {
        "epoch": epoch,
        "phase": "instance" if instance_phase else "clusters",
        "cluster_seconds": time.time() - te,
    }
    row.update({f"labels_{k}": v for k, v in label_quality(labels, true_ids).items()})
    if file_sha is not None:
        row["label_file_sha256"] = file_sha
    if not shared_labels and model_g is not None:
        row.update({f"labels_g_{k}": v for k, v in label_quality(labels_g, true_ids).items()})
    return labels, labels_g, mem_rg, mem_g, row, instance_phase


def _step_losses(
    cfg: CMAMConfig,
    x: torch.Tensor,
    xg: torch.Tensor | None,
    y: torch.Tensor,
    y_g: torch.Tensor,
    model_rg: nn.Module,
    model_g: nn.Module | None,
    heads: tuple,
    ema_rg: nn.Module | None,
    ema_g: nn.Module | None,
    kl: SymmetricKL,
    sim: SimilarityMatrixLoss,
    tri: TripletLoss,
    ce_ls: CrossEntropyLabelSmooth,
    use_kl: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """All loss terms of one batch (see the module docstring). Keys starting with ``_``
    carry detached features for the memory updates, not losses.

    ``heads``: the identity heads ``(of F_rg, of F_g)``: circle classifiers
    (``identity_loss="classifier"``: logits ``head(f, y)``, label-smoothed CE, loss keys
    ``ce_*``) or cluster memories (``"memory"``: logits ``mem.logits(f)``, plain CE, keys
    ``mem_*``).

    ``x`` / ``xg``: the (augmented, normalised) batch and its gray view (None without
    the gray view). In a distributed run they are this rank's slice of the global batch;
    the in-batch matrix terms (SIM, triplet) use features gathered from every rank
    (:func:`cmamlib.distributed.gather_with_grad`, the identity in one process) and the
    memory updates the features of the whole global batch."""
    b = x.shape[0]
    out: dict[str, torch.Tensor] = {}
    gather = dist.gather_with_grad
    classifier = cfg.identity_loss == "classifier"
    head_rg, head_g = heads
    name = "ce" if classifier else "mem"

    def logits(head, f: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return head(f, yy) if classifier else head.logits(f)

    def id_loss(z: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return ce_ls(z, yy) if classifier else F.cross_entropy(z, yy)

    def tri_feat(bn: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return bn if cfg.triplet_feature == "post_bn" else pooled

    with autocast(device, cfg.amp, cfg.amp_dtype):
        if cfg.use_gray_view and cfg.view_forward == "separate":  # BN batch statistics per view (the code)
            o, og_rg = model_rg(x), model_rg(xg)
            f_rgb, f_rgg, p_rgb, p_rgg = o.bn_feat, og_rg.bn_feat, o.feat, og_rg.feat
        elif cfg.use_gray_view:
            o = model_rg(torch.cat([x, xg]))
            f_rgb, f_rgg = o.bn_feat[:b], o.bn_feat[b:]
            p_rgb, p_rgg = o.feat[:b], o.feat[b:]
        else:
            o = model_rg(x)
            f_rgb, f_rgg, p_rgb, p_rgg = o.bn_feat, None, o.feat, None
        z_rgb = logits(head_rg, f_rgb, y)
        out[f"{name}_rg_rgb"] = id_loss(z_rgb, y)
        y_all = dist.all_gather_tensor(y)
        if cfg.triplet_weight > 0:
            out["tri_rg_rgb"] = cfg.triplet_weight * tri(gather(tri_feat(f_rgb, p_rgb)), y_all)
        z_rgg = None
        if f_rgg is not None:
            z_rgg = logits(head_rg, f_rgg, y)
            out[f"{name}_rg_gray"] = id_loss(z_rgg, y)
            if cfg.triplet_weight > 0:
                out["tri_rg_gray"] = cfg.triplet_weight * tri(gather(tri_feat(f_rgg, p_rgg)), y_all)
        if not classifier:  # memory update with the global batch: all RGB rows, then all gray rows
            out["_upd_rg"] = torch.cat([dist.all_gather_tensor(f.detach()) for f in (f_rgb, f_rgg) if f is not None])
            out["_upd_rg_y"] = torch.cat([y_all] * (2 if f_rgg is not None else 1))
        if model_g is not None:
            og = model_g(xg)
            f_g, p_g = og.bn_feat, og.feat
            keep = y_g >= 0
            yk = y_g.clamp_min(0)  # classifier mode: the fixed labels, noise never sampled
            z_g = logits(head_g, f_g, yk)
            out[f"{name}_g"] = id_loss(z_g[keep], y_g[keep]) if bool(keep.any()) else f_g.sum() * 0
            if cfg.triplet_weight > 0:
                out["tri_g"] = cfg.triplet_weight * tri(gather(tri_feat(f_g, p_g)), dist.all_gather_tensor(y_g))
            if not classifier:
                out["_upd_g"] = dist.all_gather_tensor(f_g[keep].detach())
                out["_upd_g_y"] = dist.all_gather_tensor(y_g[keep])
            # teachers (detached; EMA copies when enabled)
            if ema_rg is not None:
                with torch.no_grad():
                    if cfg.view_forward == "separate":
                        t_rgb, t_rgg = ema_rg(x).bn_feat, ema_rg(xg).bn_feat
                    else:
                        t_rg = ema_rg(torch.cat([x, xg])).bn_feat
                        t_rgb, t_rgg = t_rg[:b], t_rg[b:]
                    t_g = ema_g(xg).bn_feat
            else:
                t_rgb, t_rgg, t_g = f_rgb.detach(), f_rgg.detach(), f_g.detach()
            t_rg_view = t_rgb if cfg.rg2g_teacher_view == "rgb" else t_rgg
            # global-batch features of the similarity matrices (these tensors themselves in one process)
            gf_g, gf_rgg = gather(f_g), gather(f_rgg)
            gt_g = gf_g.detach() if ema_rg is None else gather(t_g)
            gt_rg_view = gather(t_rg_view)
            # F_rg(RGB) -> F_g(gray)
            rg2g = cfg.sim_weight * sim(gf_g, gt_rg_view)
            g2rg = cfg.sim_weight * sim(gf_rgg, gt_g)
            if use_kl:  # teachers' logits through their own network's head (detached in kl)
                rg2g = rg2g + cfg.kl_weight * kl(z_g, logits(head_rg, t_rg_view, y))
                g2rg = g2rg + cfg.kl_weight * kl(z_rgg, logits(head_g, t_g, yk))
            out["rg2g"] = cfg.lambda_rg2g * rg2g
            out["g2rg"] = cfg.lambda_g2rg * g2rg
            if cfg.symmetric:  # the RGB view becomes a student of F_g too
                sym = cfg.sim_weight * sim(gather(f_rgb), gt_g)
                if use_kl:
                    sym = sym + cfg.kl_weight * kl(z_rgb, logits(head_g, t_g, yk))
                out["g2rgb"] = cfg.lambda_g2rg * sym
        if cfg.tie_rgb_to_gray and f_rgg is not None:
            tie = cfg.sim_weight * sim(gather(f_rgb), gather(f_rgg).detach())
            if use_kl:
                tie = tie + cfg.kl_weight * kl(z_rgb, z_rgg.detach())
            out["tie"] = cfg.tie_weight * tie
    return out


def _update_memories(mem_rg: ClusterMemory, mem_g: ClusterMemory | None, terms: dict) -> None:
    """Momentum updates of the memories from the ``_upd_*`` entries of ``terms`` (popped)."""
    mem_rg.update(terms.pop("_upd_rg"), terms.pop("_upd_rg_y"))
    upd_g, upd_y = terms.pop("_upd_g", None), terms.pop("_upd_g_y", None)
    if mem_g is not None and upd_g is not None and len(upd_g):
        mem_g.update(upd_g, upd_y)


def variant_config(base: CMAMConfig, name: str) -> CMAMConfig:
    """``base`` with the overrides of one of :data:`VARIANTS`."""
    if name not in VARIANTS:
        raise ValueError(f"unknown stage-1 variant {name!r}; expected one of {sorted(VARIANTS)}")
    return replace(base, **VARIANTS[name])
