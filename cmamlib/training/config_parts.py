"""The sub-configs shared by the stages' configs, and the one helper that checks a
config's choices.

:class:`cmamlib.training.supervised.SupervisedConfig`,
:class:`cmamlib.training.cmam_config.CMAMConfig` (stage 1) and
:class:`cmamlib.training.selftrain_config.SelfTrainConfig` (stage 2) are composed of
these parts (dataclass inheritance: a part's fields are declared once, here, with their
comment) plus their own fields. A stage config stays *flat*: ``cfg.eps``, the override
keys ``stage2.eps=0.5``, presets and YAML files read and write the same keys as before;
:meth:`ConfigParts.part` gives one part as its own dataclass
(``cfg.part(BackboneConfig)``). A stage that needs another default redeclares the field
with its own default and a comment saying why.

Every field with a fixed set of values lists them in its part's (or its config's)
``CHOICES``; :func:`check_choices` checks all of them with one message format.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from ..data.transforms import AugmentConfig
from ..memory import MODES as MEMORY_MODES
from ..models import ARCHS

__all__ = [
    "BackboneConfig",
    "ClusteringConfig",
    "ConfigParts",
    "MemoryConfig",
    "OptimConfig",
    "RuntimeConfig",
    "StageRuntimeConfig",
    "check_choice",
    "check_choices",
]

P = TypeVar("P")


def check_choice(name: str, value: Any, allowed: tuple | list) -> None:
    """Raise ``ValueError("name=value: expected one of [...]")`` unless ``value`` is in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {list(allowed)}")


def check_choices(cfg: Any) -> None:
    """Check every field named in the ``CHOICES`` of ``cfg``'s class and of its parts
    (a class's own entry wins over a part's)."""
    merged: dict[str, tuple] = {}
    for klass in reversed(type(cfg).__mro__):
        merged.update(vars(klass).get("CHOICES", {}))
    for name, allowed in merged.items():
        check_choice(name, getattr(cfg, name), allowed)


class ConfigParts:
    """Mixin of a composed config: one part's fields as that part's dataclass."""

    def part(self, cls: type[P]) -> P:
        """The fields of part ``cls`` (e.g. :class:`BackboneConfig`) as a ``cls`` instance."""
        if not isinstance(self, cls):
            raise TypeError(f"{type(self).__name__} has no part {cls.__name__}")
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})


@dataclass
class BackboneConfig:
    """The network (:func:`cmamlib.models.build_model`) and its input."""

    #: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (the authors': ResNet-50).
    arch: str = "resnet18"
    #: base channel width (torchvision's ResNets: 64; the CPU presets: 16).
    width: int = 16
    #: stride of the last stage: 1 (the re-ID practice, the code) keeps larger feature maps.
    last_stride: int = 1
    #: AGW non-local blocks (the authors' config builds them; their ``nn.Sequential`` never runs them).
    non_local: bool = False
    #: ImageNet weights file in torchvision keys (every network of the run loads it); None: random init.
    pretrained: str | None = None
    #: training input ``(H, W)``; the authors: 384 x 128, the CPU presets 64 x 32.
    image_size: tuple[int, int] = (64, 32)

    CHOICES: ClassVar[dict[str, tuple]] = {"arch": tuple(ARCHS)}


@dataclass
class OptimConfig:
    """Batches, schedule and optimiser (Adam, linear warm-up then cosine decay)."""

    #: images per batch: P identities x K images (``num_instances``).
    batch_size: int = 64
    #: K, images per (pseudo) identity in a batch.
    num_instances: int = 4
    #: training epochs.
    epochs: int = 8
    #: batches per epoch; None: one pass of the sampler over the (pseudo-)labelled images.
    iters_per_epoch: int | None = 50
    #: Adam learning rate. CPU presets 3.5e-3 (from random init in a few hundred steps:
    #: at the fine-tuning value 3.5e-4 the supervised classifier stayed near chance).
    lr: float = 3.5e-3
    #: Adam weight decay (the code: 5e-4).
    weight_decay: float = 5e-4
    #: epochs of linear warm-up before the cosine decay.
    warmup_epochs: int = 1
    #: crop / flip / erasing / channel exchange / jitter of the training batches.
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ClusteringConfig:
    """Jaccard (k-reciprocal) distance + DBSCAN pseudo labels (:mod:`cmamlib.clustering`)."""

    #: k-reciprocal neighbours of the Jaccard distance (cluster-contrast: 30).
    k1: int = 15
    #: neighbours of the local query expansion (6).
    k2: int = 6
    #: DBSCAN radius on the Jaccard distance.
    eps: float = 0.5
    #: DBSCAN core-point count (4).
    min_samples: int = 4
    #: kNN of the Jaccard distance: ``"torch"`` (exact chunked top-k), ``"faiss"`` (needs
    #: ``faiss-cpu`` / ``faiss-gpu``, never required) or ``"auto"`` (faiss when importable).
    knn_backend: str = "torch"
    #: centre the features per camera before clustering (:func:`cmamlib.clustering.camera_centre`;
    #: camera ids come from file names). *Reconstruction* for random init, whose features
    #: cluster by camera.
    camera_centering: bool = True

    CHOICES: ClassVar[dict[str, tuple]] = {"knn_backend": ("torch", "faiss", "auto")}


@dataclass
class MemoryConfig:
    """Cluster memory (cluster-contrast, Dai et al. ACCV 2022; :class:`cmamlib.memory.ClusterMemory`)."""

    #: softmax temperature of the memory logits (0.05, the code).
    temperature: float = 0.05
    #: momentum of the memory update (0.2, the code).
    memory_momentum: float = 0.2
    #: ``"mean"`` (a cluster's entry moves towards the batch mean of its features) or
    #: ``"hard"`` (towards its least similar feature in the batch).
    memory_mode: str = "mean"

    CHOICES: ClassVar[dict[str, tuple]] = {"memory_mode": tuple(MEMORY_MODES)}


@dataclass
class RuntimeConfig:
    """Reproducibility and hardware; none of these changes the method."""

    #: seeds the initial weights, the batches and the augmentation.
    seed: int = 0
    #: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    device: str = "auto"
    #: mixed precision: autocast + GradScaler on CUDA; on the CPU autocast to bfloat16
    #: (faster only with AVX512-BF16 / AMX, ``benchmarks/bench_cpu_amp.py``).
    amp: bool = False
    #: CUDA autocast dtype: ``"float16"`` (with a GradScaler) or ``"bfloat16"`` (no scaler; Ampere+).
    amp_dtype: str = "float16"
    #: model and batches in ``channels_last`` memory format (GPU speed; same values).
    channels_last: bool = False
    #: on CUDA, stage each batch in pinned memory and copy it asynchronously.
    pin_memory: bool = True

    CHOICES: ClassVar[dict[str, tuple]] = {"amp_dtype": ("float16", "bfloat16")}


@dataclass
class StageRuntimeConfig(RuntimeConfig):
    """The unsupervised stages' runtime: feature extraction between epochs, distributed BatchNorm."""

    #: batch size of the feature extraction before each clustering and of the test features.
    eval_batch_size: int = 256
    #: ``torchrun`` only: BatchNorm statistics over the global batch of all ranks
    #: (:func:`cmamlib.distributed.convert_sync_batchnorm`); no effect in one process.
    sync_bn: bool = False
