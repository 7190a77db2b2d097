"""The stage-2 config (:class:`SelfTrainConfig`): every field of the self-training on the
target, with its default (the authors' code where it settles one) and its check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..labeling import COSTS, UNEQUAL
from .config_parts import (
    BackboneConfig,
    ClusteringConfig,
    ConfigParts,
    MemoryConfig,
    OptimConfig,
    StageRuntimeConfig,
    check_choices,
)

#: **The one switch** of the code-following stage-2 defaults: ``False`` keeps the defaults
#: that produced the numbers in ``reports/`` (the reconstruction), ``True`` makes every field
#: of :data:`CODE_DEFAULTS` default to the authors' released code (docs/method.md, "Where the
#: defaults still differ from the code"). Flip it here, nowhere else; an explicit field value
#: (a preset, a YAML file, ``key=value``) still wins either way.
FOLLOW_CODE_DEFAULTS: bool = True

#: What the authors' released code does, per :class:`SelfTrainConfig` field (the defaults
#: when :data:`FOLLOW_CODE_DEFAULTS` is True; :meth:`SelfTrainConfig.authors_code` applies
#: them to one config without the flip, to measure before flipping).
CODE_DEFAULTS: dict[str, Any] = {
    "init_carry": "backbone",  # only the backbone carries over; GeM and BNNeck start fresh
    "kl_detach": False,  # the KL teacher is not detached: gradients into both models
    "kl_reduction": "sum",  # KL summed over the batch and the classes
    "dist_reduction": "sum",  # distance-matrix term summed over the B x B entries
    "ward_space": "raw",  # Ward on the raw centroids; merged centroid = mean of its samples
    "test_feature": "a_pre_bnneck",  # reported feature: model A alone, pre-BNNeck GeM, flip-averaged
}


#: The stage-2 defaults before :data:`CODE_DEFAULTS` (the reconstruction the earlier
#: notebooks' numbers and the probes in investigations/ were made with); each stays a value.
EARLIER_DEFAULTS: dict[str, Any] = {
    "init_carry": "all",
    "kl_detach": True,
    "kl_reduction": "batchmean",
    "dist_reduction": "mean",
    "ward_space": "l2",
    "test_feature": "fused",
}


def _code(name: str) -> Any:
    """Default of field ``name``: the code's (:data:`CODE_DEFAULTS`) when
    :data:`FOLLOW_CODE_DEFAULTS`, else the earlier one (:data:`EARLIER_DEFAULTS`)."""
    return (CODE_DEFAULTS if FOLLOW_CODE_DEFAULTS else EARLIER_DEFAULTS)[name]


#: ``sampler`` values: the reconstruction's visible / infrared halves, the code's other-camera draws.
SAMPLERS = ("cross_modality", "other_cameras")
#: ``test_feature`` values.
TEST_FEATURES = ("fused", "a_pre_bnneck")


@dataclass
class SelfTrainConfig(ConfigParts, StageRuntimeConfig, MemoryConfig, ClusteringConfig, OptimConfig, BackboneConfig):
    """Stage-2 configuration: the shared parts (:mod:`cmamlib.training.config_parts`:
    backbone, optimisation, clustering, memory, runtime) and stage 2's own fields, each
    documented beside it. Defaults: the CPU synthetic preset (paper-scale values:
    docs/method.md, "Defaults at paper scale"); *reconstruction* marks a choice neither the
    paper's abstract nor its code settles. The backbone fields build the models only when
    ``run_selftrain`` gets no ``init_models`` (random init: the "no stage 1" ablation).
    """

    # ---- optimisation: stage 2's values (the code: 128 = 8 x 16, Adam 1e-4, 12k iterations) --
    #: K per pseudo identity; even with ``sampler="cross_modality"`` (K/2 per modality).
    num_instances: int = 8
    #: DBSCAN epochs (one re-clustering each); 0 allowed when ``kmeans_epochs > 0`` and
    #: ``kmeans_k`` is given (k-means only: the code on RegDB). CPU: 6 epochs x 40 batches.
    epochs: int = 6
    iters_per_epoch: int | None = 40
    #: ``"cross_modality"`` (*reconstruction*: K/2 visible + K/2 infrared per pseudo identity,
    #: :class:`cmamlib.data.samplers.CrossModalitySampler`) or ``"other_cameras"`` (the code,
    #: fast-reid's ``BalancedIdentitySampler``: an anchor, then K-1 images of its pseudo
    #: identity from other cameras, no modality quota; :class:`cmamlib.data.samplers.OtherCameraSampler`).
    sampler: str = "cross_modality"

    # ---- clustering: one value for both modalities (the code) or a (visible, infrared) pair --
    #: (*reconstruction*: the modalities differ in images per identity and feature spread;
    #: :meth:`dbscan_params`); pairs need ``cluster_mode="per_modality"``. The code: 30, 6,
    #: 0.4, 4; CPU k1 15 (SYSU-MM01-synth has about 10 visible + 5 infrared images per id).
    k1: int | tuple[int, int] = 15
    k2: int | tuple[int, int] = 6
    eps: float | tuple[float, float] = 0.4
    min_samples: int | tuple[int, int] = 4
    #: ``"per_modality"`` (the code: cluster each modality, then match) or ``"joint"``
    #: (ablation: one clustering of both modalities, no matching).
    cluster_mode: str = "per_modality"
    #: unequal cluster counts (:func:`cmamlib.labeling.match_clusters`): ``"ward_merge"`` (the code).
    match_unequal: str = "ward_merge"
    #: matching cost of two centroids: ``"sqeuclidean"`` (the code), ``"cosine"``, ``"inv_exp_cos"``.
    match_cost: str = "sqeuclidean"
    #: pairs costlier than this stay unmatched; None: keep every pair (the code).
    match_threshold: float | None = None
    #: Ward merge on ``"raw"`` centroids, a merged group's centroid the mean of its samples (the
    #: code), or on ``"l2"``-normalised centroids, re-normalised means (*reconstruction*).
    ward_space: str = _code("ward_space")
    #: epochs of the second phase with spherical k-means per modality (0: off; sklearn
    #: ``KMeans`` on the L2-normalised fused features); its warm-up + cosine schedule starts
    #: afresh (*reconstruction*).
    kmeans_epochs: int = 0
    #: K per modality (an int, or ``(K_visible, K_infrared)``; ``"joint"`` uses the first);
    #: None: the last DBSCAN epoch's cluster counts (*reconstruction*: the authors' K=400
    #: encodes the known id count).
    kmeans_k: int | tuple[int, int] | None = None

    # ---- models --------------------------------------------------------------------------------
    #: what carries over from ``init_models``: ``"backbone"`` (the code: the head keys differ, so
    #: GeM ``p`` restarts at 3 and the BNNeck fresh) or ``"all"`` (every weight and buffer; reconstruction).
    init_carry: str = _code("init_carry")
    #: train A and B; False: ablation, model A only, no mutual terms.
    two_models: bool = True
    #: the gray view fed to B: ``"random_channel"`` (the code) or ``"luma"``.
    gray_mode: str = "random_channel"
    #: fusion of A's and B's features for clustering: ``"concat"`` or ``"mean"``.
    fusion: str = "concat"

    # ---- mutual learning between A and B -----------------------------------------------------
    #: weight of the KL terms on memory logits, both directions (0.01, the code).
    kl_weight: float = 0.01
    #: ``"plain"`` (``KL(softmax teacher || softmax student)`` per direction) or ``"symmetric"``
    #: (:class:`cmamlib.losses.SymmetricKL` per direction); *reconstruction* of the exact form.
    kl_mode: str = "plain"
    #: detach each direction's teacher (*reconstruction*); the code (False) lets both
    #: directions' gradients flow into both models.
    kl_detach: bool = _code("kl_detach")
    #: ``"sum"`` (the code: over the batch and the classes) or ``"batchmean"`` (reconstruction).
    kl_reduction: str = _code("kl_reduction")
    #: weight of the distance-matrix term (0.05, the code).
    dist_weight: float = 0.05
    #: its reduction over the ``B x B`` entries: ``"sum"`` (the code) or ``"mean"`` (reconstruction).
    dist_reduction: str = _code("dist_reduction")
    #: EMA (mean-teacher) copies as the mutual terms' teachers (off), and their momentum.
    mutual_ema: bool = False
    ema_momentum: float = 0.999

    # ---- reported feature ---------------------------------------------------------------------
    #: the method's number (:func:`cmamlib.experiments.stage2_feature_fns`): ``"a_pre_bnneck"``
    #: (the code: model A alone, pre-BNNeck GeM, flip-averaged, L2-normalised) or ``"fused"``
    #: (``fusion`` of A's and B's post-BNNeck features); the other is reported under a suffix.
    #: Training does not read it.
    test_feature: str = _code("test_feature")

    CHOICES: ClassVar[dict[str, tuple]] = {
        "cluster_mode": ("per_modality", "joint"),
        "match_unequal": tuple(UNEQUAL),
        "match_cost": tuple(COSTS),
        "dist_reduction": ("mean", "sum"),
        "kl_reduction": ("batchmean", "sum"),
        "init_carry": ("all", "backbone"),
        "ward_space": ("l2", "raw"),
        "sampler": SAMPLERS,
        "test_feature": TEST_FEATURES,
        "kl_mode": ("plain", "symmetric"),
        "fusion": ("concat", "mean"),
        "gray_mode": ("random_channel", "luma"),
    }

    @classmethod
    def authors_code(cls, **overrides: Any) -> "SelfTrainConfig":
        """A config with every :data:`CODE_DEFAULTS` value applied (then ``overrides``),
        whatever :data:`FOLLOW_CODE_DEFAULTS` says: the code-following run to measure."""
        return cls(**{**CODE_DEFAULTS, **overrides})

    def resume_strict_fields(self) -> tuple[str, ...]:
        """Fields added with a default that changed this config's behaviour: a checkpoint
        written before them is another run (:func:`cmamlib.training.common.check_resume_config`).
        With :data:`FOLLOW_CODE_DEFAULTS` the code's defaults of the fields added with it
        differ from what older checkpoints ran."""
        if not FOLLOW_CODE_DEFAULTS:
            return ()
        return tuple(k for k in CODE_DEFAULTS if k not in ("dist_reduction", "test_feature"))

    def validate(self) -> None:
        check_choices(self)
        if self.num_instances < 2 or (self.sampler == "cross_modality" and self.num_instances % 2):
            raise ValueError(
                f"num_instances={self.num_instances}: expected an even K >= 2 (K/2 per modality)"
                if self.sampler == "cross_modality"
                else f"num_instances={self.num_instances}: expected K >= 2"
            )
        if self.batch_size < self.num_instances or self.batch_size % self.num_instances:
            raise ValueError(f"batch_size={self.batch_size}: expected a multiple of num_instances={self.num_instances}")
        if self.kmeans_epochs < 0:
            raise ValueError(f"kmeans_epochs={self.kmeans_epochs}: expected >= 0")
        if self.epochs < 0 or (self.epochs == 0 and (self.kmeans_epochs < 1 or self.kmeans_k is None)):
            raise ValueError(
                f"epochs={self.epochs}: expected >= 1 (DBSCAN epochs come first), or 0 with kmeans_epochs >= 1 "
                f"and kmeans_k given (k-means only; now kmeans_epochs={self.kmeans_epochs}, kmeans_k={self.kmeans_k})"
            )
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
