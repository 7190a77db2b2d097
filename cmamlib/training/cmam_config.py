"""Stage-1 configuration: :class:`CMAMConfig`, the values of the authors' code
(:data:`CODE_DEFAULTS`) and the earlier reconstruction (:data:`EARLIER_DEFAULTS`), the one
switch between them (:data:`FOLLOW_CODE_DEFAULTS`), and the ablation variants
(:data:`VARIANTS`, :func:`variant_config`). :mod:`cmamlib.training.cmam` re-exports all
of them; the training loop is there."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from .config_parts import (
    BackboneConfig,
    ClusteringConfig,
    ConfigParts,
    MemoryConfig,
    OptimConfig,
    StageRuntimeConfig,
    check_choices,
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
class CMAMConfig(ConfigParts, StageRuntimeConfig, MemoryConfig, ClusteringConfig, OptimConfig, BackboneConfig):
    """Stage-1 configuration: the shared parts (:mod:`cmamlib.training.config_parts`:
    backbone, optimisation, clustering, memory, runtime) and stage 1's own fields, each
    documented beside it. Defaults: the CPU synthetic preset (paper-scale values:
    docs/method.md, "Defaults at paper scale"); *reconstruction* marks a choice neither the
    paper's abstract nor its code settles. Fields from :data:`CODE_DEFAULTS` follow the
    authors' code while :data:`FOLLOW_CODE_DEFAULTS` is True.
    """

    # ---- optimisation: stage 1's values (the code: 4 ids x 16, 2 x 15k iterations) ------
    #: 8 epochs x 50 batches on the CPU (fixed batches: a pass over few large clusters can be a handful).
    epochs: int = 8
    iters_per_epoch: int | None = 50

    # ---- clustering: memory mode (and the source-label run) -----------------------------
    #: Market-1501-synth has about 8 images per identity instead of Market's 17: k1 15 and
    #: eps 0.5 against cluster-contrast's 30 and 0.6.
    eps: float = 0.5

    # ---- identity term ---------------------------------------------------------------------
    #: ``"classifier"`` (the code: fixed ``label_file`` labels, a circle classifier + CE with
    #: label smoothing + triplet per branch, nothing re-clustered) or ``"memory"`` (the earlier
    #: reconstruction: cluster memory, re-clustered every epoch unless ``label_file`` is given).
    identity_loss: str = _default("identity_loss")
    #: the circle classifier's scale ``s`` (64, the code).
    circle_scale: float = 64.0
    #: the circle classifier's margin ``m`` (0.35, the code).
    circle_margin: float = 0.35
    #: label smoothing of the classifier's cross entropy (0.1, the code).
    label_smoothing: float = 0.1
    #: memory mode: ``"shared"`` (one label set from ``concat(F_rg(RGB), F_g(gray))``, as the code
    #: uses one label set) or ``"per_network"`` (each network clusters its own; reconstruction).
    label_space: str = "shared"
    #: ``path,label`` CSV of source pseudo labels read once and used by every branch and epoch
    #: (:mod:`cmamlib.data.label_files`; :func:`cmamlib.training.source_labels.run_source_labels`
    #: makes one, or give another method's, as the authors used PPLR's). None: memory mode
    #: clusters every epoch.
    label_file: str | None = None
    #: memory mode: the features the memories are re-initialised from each epoch: ``"train"``
    #: (train-mode BNNeck features; eval-mode statistics of a drifting network feed a collapse
    #: loop, docs/method.md) or ``"eval"`` (the earlier default: the clustering's features).
    memory_init: str = _default("memory_init")
    #: memory mode: how F_rg's two views update its memory each step: ``"rgb_then_gray"`` (every
    #: RGB row, then every gray row, so each entry ends nearest its last gray feature) or
    #: ``"view_mean"`` (one row per image, the mean of its two L2-normalised view features).
    #: The code has no memory (it trains a classifier), so neither is the code's
    #: (*reconstruction*); ``"view_mean"`` lost on every run measured (2 seeds x (ii), (iv):
    #: ``reports/probes/rg_memory_update.json``), so the default stays.
    rg_memory_update: str = "rgb_then_gray"
    #: batch-hard triplet per branch: weight (0 off; the code 1).
    triplet_weight: float = _default("triplet_weight")
    #: its hinge margin (0.3), or None for the soft margin (the code).
    triplet_margin: float | None = _default("triplet_margin")
    #: its features: ``"post_bn"`` (BNNeck features, the code) or ``"pre_bn"`` (pooled; earlier).
    triplet_feature: str = _default("triplet_feature")
    #: memory mode: first epochs in which every image is its own class (SpCL's un-clustered
    #: instances) before re-clustering starts; *reconstruction* for random init; 0 = off.
    instance_epochs: int = 0

    # ---- views and networks ----------------------------------------------------------------
    #: the gray view: ``"random_channel"`` (the code: one of R, G, B per image) or ``"luma"``.
    gray_mode: str = "random_channel"
    #: how F_rg sees its two views: ``"separate"`` (the code: two forwards, BatchNorm statistics
    #: per view) or ``"concat"`` (earlier: one forward of both views).
    view_forward: str = _default("view_forward")
    #: ablation (i) when False: the RGB view only.
    use_gray_view: bool = True
    #: ablation (ii) when False: no F_g (one network on RGB + gray).
    use_aux_gray: bool = True
    #: F_g starts as a copy of F_rg's initial weights, as the authors start both from the same
    #: ImageNet weights (*reconstruction* of that start for random init; False: independent
    #: draws, the ``cmam_independent_init`` investigation). With ``pretrained`` both load the file.
    shared_init: bool = True
    #: how the shared label space fuses the two networks' features (``"concat"`` or ``"mean"``).
    fusion: str = "concat"

    # ---- mutual terms (F_rg(RGB) -> F_g(gray) -> F_rg(gray)) ----------------------------------
    #: weight of the symmetric KL on identity logits (0.1, the code).
    kl_weight: float = 0.1
    #: weight of the similarity-matrix term SIM (0.5, the code).
    sim_weight: float = 0.5
    #: KL from epoch ``ceil(kl_start_fraction * epochs)`` (the start of run 2).
    kl_start_fraction: float = 0.5
    #: ``"sum"`` (the code: over the batch and the classes) or ``"mean"`` (earlier: batch mean).
    #: SIM is always summed over its ``B x B`` entries (the code).
    kl_reduction: str = _default("kl_reduction")
    #: scale of the F_rg(RGB) -> F_g direction (1.0).
    lambda_rg2g: float = 1.0
    #: scale of the F_g -> F_rg(gray) direction (1.0).
    lambda_g2rg: float = 1.0
    #: teacher view of the rg2g direction: ``"rgb"`` (the code) or ``"gray"`` (reconstruction).
    rg2g_teacher_view: str = "rgb"
    #: ablation (iii): the RGB view of F_rg is also a student of F_g.
    symmetric: bool = False
    #: ablation (v): an extra term pulling F_rg(RGB) towards F_rg(gray), weight ``tie_weight``.
    tie_rgb_to_gray: bool = False
    tie_weight: float = 1.0
    #: mean-teacher (EMA) targets for the mutual terms (off), and their momentum.
    ema: bool = False
    ema_momentum: float = 0.999

    # ---- schedule ----------------------------------------------------------------------------
    #: ``"two_runs"`` (the code: the KL start ends run 1; run 2 starts from run 1's weights with
    #: a fresh optimizer, AMP scaler and schedule, EMA copies reset) or ``"one_run"`` (earlier:
    #: one optimizer, warm-up over ``warmup_epochs`` then cosine over all epochs).
    schedule: str = _default("schedule")
    #: ``"two_runs"``, per run (:func:`cmamlib.training.cmam.two_run_lr_factor`): linear warm-up
    #: from ``lr_warmup_factor`` x lr over ``warmup_fraction`` of the steps, flat until
    #: ``lr_flat_fraction``, cosine to ``lr_min_factor`` x lr (the code: 2000 / 15000,
    #: 9000 / 15000, 0.01, 7.7e-7 / 3.5e-4).
    warmup_fraction: float = 2000 / 15000
    lr_flat_fraction: float = 9000 / 15000
    lr_warmup_factor: float = 0.01
    lr_min_factor: float = 7.7e-7 / 3.5e-4

    # ---- reported feature --------------------------------------------------------------------
    #: direct-transfer feature of F_rg (notebooks 01 / 02), flip-averaged, L2-normalised:
    #: ``"pre_bnneck"`` (the code: pooled GeM before the BNNeck) or ``"bnneck"`` (earlier).
    #: Training does not read it.
    test_feature: str = _default("test_feature")

    CHOICES: ClassVar[dict[str, tuple]] = {
        "identity_loss": ("classifier", "memory"),
        "kl_reduction": ("sum", "mean"),
        "schedule": ("one_run", "two_runs"),
        "triplet_feature": ("pre_bn", "post_bn"),
        "memory_init": ("eval", "train"),
        "rg_memory_update": ("view_mean", "rgb_then_gray"),
        "test_feature": ("pre_bnneck", "bnneck"),
        "label_space": ("shared", "per_network"),
        "view_forward": ("concat", "separate"),
        "rg2g_teacher_view": ("rgb", "gray"),
        "gray_mode": ("random_channel", "luma"),
        "fusion": ("concat", "mean"),
    }

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
        check_choices(self)
        if self.identity_loss == "classifier" and self.instance_epochs:
            raise ValueError("instance_epochs needs identity_loss='memory' (the classifier trains on fixed labels)")
        if not 0 <= self.warmup_fraction <= self.lr_flat_fraction <= 1:
            raise ValueError(
                f"warmup_fraction={self.warmup_fraction}, lr_flat_fraction={self.lr_flat_fraction}: "
                "expected 0 <= warmup_fraction <= lr_flat_fraction <= 1"
            )
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
