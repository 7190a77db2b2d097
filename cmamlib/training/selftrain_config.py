"""The stage-2 config (:class:`SelfTrainConfig`): every field of the self-training on the
target, with its default (the authors' code where it settles one) and its check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.transforms import AugmentConfig
from ..labeling import COSTS, UNEQUAL
from .common import (
    check_amp_dtype,
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
class SelfTrainConfig:
    """Stage-2 configuration. Defaults: the CPU synthetic preset; paper-scale values are
    in docs/method.md ("Defaults at paper scale"). Fields marked *reconstruction* are choices
    neither the paper's abstract nor its code settles.

    Attributes:
        arch / width / last_stride / non_local / pretrained: backbone of freshly built
            models (:func:`cmamlib.models.build_model`), used when ``run_selftrain`` gets
            no ``init_models`` (random init: the "no stage 1" ablation).
        image_size: ``(H, W)``; the authors use 384x128.
        batch_size / num_instances: P x K batches; the code uses 128 = 8 x 16. K even with
            ``sampler="cross_modality"``.
        sampler: ``"cross_modality"`` (default, *reconstruction*: K/2 visible + K/2
            infrared per pseudo identity with both modalities,
            :class:`cmamlib.data.samplers.CrossModalitySampler`) or ``"other_cameras"``
            (the code, fast-reid's ``BalancedIdentitySampler``: an anchor image, then K-1
            images of its pseudo identity from cameras other than the anchor's where it
            has any, no modality quota; :class:`cmamlib.data.samplers.OtherCameraSampler`).
        init_carry: what carries over from ``init_models``: ``"all"`` (every weight and
            buffer, BNNeck statistics and GeM ``p`` included; *reconstruction*) or
            ``"backbone"`` (the code: the stage-2 head keys do not match stage 1's, so
            only ``backbone.*`` loads; GeM ``p`` restarts at 3 and the BNNeck at weight 1,
            bias 0, running mean 0, variance 1).
        epochs: DBSCAN epochs (one re-clustering each); 0 allowed when ``kmeans_epochs >
            0`` and ``kmeans_k`` is given (k-means only: the code on RegDB).
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
        ward_space: centroids the Ward merge clusters (``match_unequal="ward_merge"``):
            ``"l2"`` (*reconstruction*: L2-normalised cluster centroids, a merged group's
            centroid the re-normalised mean of its normalised centroids) or ``"raw"`` (the
            code: the raw cluster means, a merged group's centroid the mean of its
            samples).
        temperature / memory_momentum / memory_mode: cluster memories (0.05, 0.2, "mean":
            the code).
        two_models: train A and B (default); False = ablation: model A only, no mutual
            terms, features of A alone.
        gray_mode: gray view fed to B: ``"random_channel"`` (the code) or ``"luma"``.
        kl_weight: weight of the mutual KL terms on memory logits (0.01, the code), both
            directions.
        kl_detach: detach the teacher of each KL direction (True, *reconstruction*); the
            code (False) lets both directions' gradients flow into both models.
        kl_reduction: ``"batchmean"`` (*reconstruction*: summed over the classes, averaged
            over the batch) or ``"sum"`` (the code: summed over the batch too).
        kl_mode: ``"plain"`` (``KL(softmax teacher || softmax student)`` per direction)
            or ``"symmetric"`` (:class:`cmamlib.losses.SymmetricKL` per direction);
            *reconstruction* of the exact form.
        dist_weight / dist_reduction: weight of the distance-matrix term (0.05, the code)
            and how it reduces the ``B x B`` entries: ``"mean"`` (*reconstruction*) or
            ``"sum"`` (the authors' code, B = 128 there: 16,384 times the mean). Measured
            on the synthetic benchmark (6 epochs, seeds 0 / 1,
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
        test_feature: the feature the experiments report as the method's number
            (:func:`cmamlib.experiments.stage2_feature_fns`): ``"fused"``
            (*reconstruction*: ``fusion`` of A's and B's post-BNNeck features) or
            ``"a_pre_bnneck"`` (the code: model A alone, its pre-BNNeck GeM feature,
            flip-averaged, L2-normalised); the other one is reported too, under a suffix.
            Training does not read it.
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
    sampler: str = "cross_modality"
    init_carry: str = _code("init_carry")
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
    ward_space: str = _code("ward_space")
    temperature: float = 0.05
    memory_momentum: float = 0.2
    memory_mode: str = "mean"
    two_models: bool = True
    gray_mode: str = "random_channel"
    kl_weight: float = 0.01
    kl_mode: str = "plain"
    kl_detach: bool = _code("kl_detach")
    kl_reduction: str = _code("kl_reduction")
    dist_weight: float = 0.05
    dist_reduction: str = _code("dist_reduction")
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
    test_feature: str = _code("test_feature")

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
        if self.kl_reduction not in ("batchmean", "sum"):
            raise ValueError(f"kl_reduction={self.kl_reduction!r}: expected 'batchmean' or 'sum'")
        if self.init_carry not in ("all", "backbone"):
            raise ValueError(f"init_carry={self.init_carry!r}: expected 'all' or 'backbone'")
        if self.ward_space not in ("l2", "raw"):
            raise ValueError(f"ward_space={self.ward_space!r}: expected 'l2' or 'raw'")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}: expected one of {SAMPLERS}")
        if self.test_feature not in TEST_FEATURES:
            raise ValueError(f"test_feature={self.test_feature!r}: expected one of {TEST_FEATURES}")
        if self.kl_mode not in ("plain", "symmetric"):
            raise ValueError(f"kl_mode={self.kl_mode!r}: expected 'plain' or 'symmetric'")
        if self.fusion not in ("concat", "mean"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'concat' or 'mean'")
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
