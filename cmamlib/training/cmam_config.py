"""Stage-1 configuration: :class:`CMAMConfig`, the values of the authors' code
(:data:`CODE_DEFAULTS`) and the earlier reconstruction (:data:`EARLIER_DEFAULTS`), the one
switch between them (:data:`FOLLOW_CODE_DEFAULTS`), and the ablation variants
(:data:`VARIANTS`, :func:`variant_config`). :mod:`cmamlib.training.cmam` re-exports all
of them; the training loop is there."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..data.transforms import AugmentConfig
from .common import (
    check_amp_dtype,
)

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

#: The defaults before :data:`CODE_DEFAULTS` (the earlier reconstruction; `cpu-long` and the probes pin them).
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


def variant_config(base: CMAMConfig, name: str) -> CMAMConfig:
    """``base`` with the overrides of one of :data:`VARIANTS`."""
    if name not in VARIANTS:
        raise ValueError(f"unknown stage-1 variant {name!r}; expected one of {sorted(VARIANTS)}")
    return replace(base, **VARIANTS[name])
