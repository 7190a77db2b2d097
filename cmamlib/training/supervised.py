"""Supervised trainer (identity labels): calibration of the synthetic benchmark and the
supervised upper bound.  Never used by the unsupervised method.

Losses: cross entropy with label smoothing on the BNNeck feature's classifier +
batch-hard triplet on the pooled feature (Luo et al., "Bag of Tricks", CVPRW 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data.readers import relabel
from ..data.records import INFRARED, Record
from ..data.samplers import CrossModalitySampler, RandomIdentitySampler
from ..data.transforms import augment, gray_view, to_float
from ..losses import CrossEntropyLabelSmooth, TripletLoss
from ..models import ReIDNet, build_model
from ..utils import resolve_device, seed_everything
from .common import (
    autocast,
    gather_batch,
    lr_factor,
    make_optimizer,
    make_scaler,
    to_memory_format,
)
from .config_parts import BackboneConfig, ConfigParts, OptimConfig, RuntimeConfig, check_choices
from .driver import Stage, train, training_images


@dataclass
class SupervisedConfig(ConfigParts, RuntimeConfig, OptimConfig, BackboneConfig):
    """Supervised training configuration: the shared parts (:mod:`cmamlib.training.config_parts`:
    backbone, optimisation, runtime) and the trainer's own fields, each documented beside it.
    Defaults: the CPU synthetic preset."""

    #: 40 x 25 = 1,000 steps of 64 images whatever the training set (at 12 one-pass epochs the
    #: IR-only calibration model's classifier had barely left chance).
    epochs: int = 40
    iters_per_epoch: int | None = 25
    #: label smoothing of the classifier's cross entropy (Bag of Tricks: 0.1).
    label_smoothing: float = 0.1
    #: hinge margin of the batch-hard triplet on the pooled feature.
    triplet_margin: float = 0.3
    #: weight of the triplet (0: off).
    triplet_weight: float = 1.0
    #: probability that a *visible* training image is replaced by its gray view (0: off;
    #: calibration models (c) and (d) use 0.5).
    gray_prob: float = 0.0
    #: that gray view: ``"luma"`` or ``"random_channel"``.
    gray_mode: str = "luma"
    #: K/2 visible + K/2 infrared images per identity in a batch.
    cross_modality_batches: bool = False

    CHOICES: ClassVar[dict[str, tuple]] = {"gray_mode": ("random_channel", "luma")}

    def validate(self) -> None:
        check_choices(self)


@dataclass
class SupervisedResult:
    model: ReIDNet
    history: list[dict]
    seconds: float
    images_per_second: float


class SupervisedStage(Stage):
    """The supervised trainer as a :class:`cmamlib.training.driver.Stage`: one model and
    a linear classifier over the identity labels; P x K batches (K/2 visible + K/2
    infrared with ``cross_modality_batches``), the gray view of visible images with
    probability ``gray_prob``, warm-up + cosine over all steps."""

    name = "supervised"
    desc = "supervised"
    loss_prefix = ""

    def __init__(
        self, config: SupervisedConfig, records: Sequence[Record], images: torch.Tensor | None, progress: bool
    ):
        cfg = self.config = config
        cfg.validate()
        if not records:
            raise ValueError("run_supervised: no training records")
        seed_everything(cfg.seed)
        self.device = device = resolve_device(cfg.device)
        self.images = training_images(records, images, cfg.image_size, progress)
        labels = relabel([r.pid for r in records])
        is_ir = np.array([r.modality == INFRARED for r in records])
        n_cls = int(labels.max()) + 1
        self.model = to_memory_format(
            build_model(
                cfg.arch,
                width=cfg.width,
                last_stride=cfg.last_stride,
                non_local=cfg.non_local,
                pretrained=cfg.pretrained,
            ).to(device),
            cfg.channels_last,
        )
        self.classifier = nn.Linear(self.model.feat_dim, n_cls, bias=False).to(device)
        nn.init.normal_(self.classifier.weight, std=0.001)
        params = list(self.model.parameters()) + list(self.classifier.parameters())
        self.opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
        self.scaler = make_scaler(device, cfg.amp, cfg.amp_dtype)
        self.ce = CrossEntropyLabelSmooth(cfg.label_smoothing)
        self.tri = TripletLoss(cfg.triplet_margin)
        if cfg.cross_modality_batches:
            self.sampler = CrossModalitySampler(
                labels, is_ir, cfg.num_instances, cfg.batch_size, cfg.seed, cfg.iters_per_epoch
            )
        else:
            self.sampler = RandomIdentitySampler(
                labels, cfg.num_instances, cfg.batch_size, cfg.seed, cfg.iters_per_epoch
            )
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.labels_t = torch.from_numpy(labels)
        self.is_ir_t = torch.from_numpy(is_ir)
        self.sampler.set_epoch(0)
        steps_per_epoch = self.sampler.num_batches
        self.total = steps_per_epoch * cfg.epochs
        self.warm = steps_per_epoch * cfg.warmup_epochs
        self.step_count = 0
        self.epochs = cfg.epochs
        self.modules = {"model": self.model, "classifier": self.classifier}
        self.train_modules = [self.model]
        self.eval_modules = [self.model]

    def begin_epoch(self, epoch: int) -> tuple[dict, list[np.ndarray]]:
        self.sampler.set_epoch(epoch)
        return {"epoch": epoch}, list(self.sampler.batches())

    def lr(self, epoch: int, i: int, n_batches: int) -> float:
        return self.config.lr * lr_factor(self.step_count, self.total, self.warm)

    def step(self, epoch: int, i: int, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        cfg, device = self.config, self.device
        idx_t = torch.as_tensor(idx)
        x = to_float(gather_batch(self.images, idx_t, device, cfg.pin_memory))
        if cfg.gray_prob > 0:
            sel = (torch.rand(len(idx), generator=self.gen) < cfg.gray_prob) & ~self.is_ir_t[idx_t]
            if bool(sel.any()):
                x[sel.to(device)] = gray_view(x[sel.to(device)], cfg.gray_mode, self.gen)
        x = to_memory_format(augment(x, cfg.augment, self.gen), cfg.channels_last)
        y = self.labels_t[idx_t].to(device)
        with autocast(device, cfg.amp, cfg.amp_dtype):
            out = self.model(x)
            logits = self.classifier(out.bn_feat)
            l_ce = self.ce(logits, y)
            l_tri = self.tri(out.feat, y)
            loss = l_ce + cfg.triplet_weight * l_tri
        acc = (logits.argmax(1) == y).float().mean()
        return loss, {"ce": l_ce, "triplet": l_tri, "acc": acc}

    def after_step(self) -> None:
        self.step_count += 1


def run_supervised(
    config: SupervisedConfig,
    records: Sequence[Record],
    images: torch.Tensor | None = None,
    log_path: str | None = None,
    progress: bool = True,
) -> SupervisedResult:
    """Train a :class:`ReIDNet` with identity labels (:class:`SupervisedStage` through
    :func:`cmamlib.training.driver.train`).

    Args:
        config: the configuration.
        records: training records (their ``pid`` is the supervision).
        images: optional pre-decoded ``(N, 3, H, W)`` uint8 images of ``records``
            (:func:`cmamlib.data.loading.load_images`); decoded here otherwise.
        log_path: optional JSON-lines log, one row per epoch (appended to).
    """
    stage = SupervisedStage(config, records, images, progress)
    res = train(stage, progress=progress, log_path=log_path)
    return SupervisedResult(
        model=stage.model,
        history=res.history,
        seconds=res.seconds,
        images_per_second=res.n_seen / max(res.seconds, 1e-9),
    )


def supervised_run_path(runs_dir: str | Path, name: str, config: SupervisedConfig) -> Path:
    """Cache file of a supervised model: ``runs_dir/supervised/<name>_<key>_seed<seed>/model.pt``,
    ``key`` a short hash of ``config`` without ``seed`` and ``device``. Notebook 00's
    calibration and notebooks 03 / 04's upper bound name their models alike, so a model
    trained by one with the same config and data is loaded by the others, and models of
    other configs live side by side."""
    import hashlib
    import json

    from .common import config_to_dict

    d = {k: v for k, v in config_to_dict(config).items() if k not in ("seed", "device")}
    key = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    return Path(runs_dir) / "supervised" / f"{name}_{key}_seed{config.seed}" / "model.pt"


def run_supervised_cached(
    config: SupervisedConfig,
    records: Sequence[Record],
    images: torch.Tensor,
    path: str | Path | None,
    progress: bool = True,
) -> SupervisedResult:
    """:func:`run_supervised`, cached in ``path`` (a ``model.pt``: state dict, config,
    history, training seconds and images/s, written atomically) and loaded from there
    when it exists and its config is the same (``device`` may differ). ``path`` None:
    train without caching.

    Raises:
        ValueError: the cached model was trained with another config (names the fields).
    """
    from ..utils import atomic_save, load_checkpoint
    from .common import config_to_dict

    cfg_dict = config_to_dict(config)
    if path is not None and Path(path).exists():
        state = load_checkpoint(path)
        diff = sorted(
            k
            for k in set(state["config"]) | set(cfg_dict)
            if k != "device" and state["config"].get(k) != cfg_dict.get(k)
        )
        if diff:
            raise ValueError(
                f"{path} was trained with another config (fields {diff}); use another runs folder or delete it"
            )
        model = build_model(config.arch, width=config.width, last_stride=config.last_stride, non_local=config.non_local)
        model.load_state_dict(state["model"])
        model = model.to(resolve_device(config.device)).eval()
        secs = float(state.get("seconds", float("nan")))
        return SupervisedResult(
            model=model,
            history=list(state.get("history", [])),
            seconds=secs,
            images_per_second=float(state.get("images_per_second", float("nan"))),
        )
    res = run_supervised(config, records, images, progress=progress)
    if path is not None:
        atomic_save(
            {
                "model": res.model.state_dict(),
                "config": cfg_dict,
                "seconds": res.seconds,
                "images_per_second": res.images_per_second,
                "history": res.history,
            },
            Path(path),
        )
    res.model.eval()
    return res
