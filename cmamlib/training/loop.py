"""Pieces shared by the two unsupervised stages: image views, per-epoch feature
extraction, EMA teachers and the fractional-epoch learning-rate schedule (the run's
resume / loop / checkpoint bookkeeping is :mod:`cmamlib.training.driver`'s)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn as nn

from .. import distributed as dist
from ..data.loading import iterate_batches
from ..data.transforms import gray_view
from ..features import extract_features
from .common import lr_factor

# moved to the driver; importable from here as before
from .driver import StopTraining, restore_training_state, training_state  # noqa: F401


def gray_transform(mode: str, seed: int, skip: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``[0, 1]``-batch transform giving the gray view with a seeded generator, so that
    features of the gray view (random channel) are the same for the same seed.

    ``skip``: the batches start at row ``skip`` of the full image set (a distributed
    shard): the generator first draws the channels of the ``skip`` rows before, so every
    row gets the channel it gets when the whole set is transformed in order."""
    gen = torch.Generator().manual_seed(int(seed))
    if skip and mode == "random_channel":
        torch.randint(0, 3, (int(skip),), generator=gen)  # the draws of rows [0, skip)
    return lambda x: gray_view(x, mode, gen)


def extract(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    gray: str | None = None,
    seed: int = 0,
    amp: bool = False,
    amp_dtype: str | None = None,
    progress: bool = False,
    desc: str = "features",
    distributed: bool = False,
    feature: str = "bnneck",
) -> torch.Tensor:
    """Flip-averaged, L2-normalised features ``(N, D)`` of uint8 images ``(N, 3, H, W)``;
    ``gray`` names a gray mode to feed the gray view instead of the image; ``amp`` /
    ``amp_dtype`` / ``feature`` (``"bnneck"`` or ``"pre_bnneck"``):
    :func:`cmamlib.features.extract_features`.

    ``distributed=True`` in a distributed run (a collective: every rank must call it):
    each rank extracts a block of whole batches (:func:`cmamlib.distributed.extraction_shard`)
    and the blocks are gathered, so every rank returns the features of all N images,
    equal to those of a single process. Without a process group it changes nothing."""
    if distributed and dist.is_distributed():
        lo, hi = dist.extraction_shard(images.shape[0], batch_size)
        if hi > lo:
            tf = gray_transform(gray, seed, skip=lo) if gray else None
            batches = iterate_batches(images[lo:hi], batch_size, device=device, transform=tf)
            part = extract_features(
                model,
                batches,
                device=device,
                amp=amp,
                amp_dtype=amp_dtype,
                progress=progress and dist.is_main(),
                desc=desc,
                feature=feature,
            )
        else:
            part = torch.zeros((0, int(model.feat_dim)), dtype=torch.float32)
        return dist.all_gather_tensor(part)
    tf = gray_transform(gray, seed) if gray else None
    batches = iterate_batches(images, batch_size, device=device, transform=tf)
    return extract_features(
        model, batches, device=device, amp=amp, amp_dtype=amp_dtype, progress=progress, desc=desc, feature=feature
    )


def epoch_features(
    model: nn.Module,
    images: torch.Tensor,
    cfg: Any,
    device: torch.device,
    gray_epoch: int | None = None,
    progress: bool = False,
    desc: str = "features",
    distributed: bool = True,
) -> torch.Tensor:
    """:func:`extract` with a stage config's extraction settings (``eval_batch_size``,
    ``amp``, ``amp_dtype``): the features a stage clusters on between its epochs.
    ``gray_epoch``: feed the gray view (``cfg.gray_mode``, generator seeded
    ``cfg.seed * 1000 + gray_epoch``) instead of the image."""
    gray = {} if gray_epoch is None else {"gray": cfg.gray_mode, "seed": cfg.seed * 1000 + gray_epoch}
    return extract(
        model,
        images,
        device,
        cfg.eval_batch_size,
        amp=cfg.amp,
        amp_dtype=cfg.amp_dtype,
        progress=progress,
        desc=desc,
        distributed=distributed,
        **gray,
    )


def fuse(parts: list[torch.Tensor], how: str = "concat") -> torch.Tensor:
    """Fused feature of several L2-normalised ``(N, D_i)`` parts: ``"concat"`` (then
    re-normalised, so each part weighs the same) or ``"mean"`` (same D needed)."""
    if len(parts) == 1:
        return parts[0]
    if how == "concat":
        f = torch.cat(parts, dim=1)
    elif how == "mean":
        f = torch.stack(parts).mean(0)
    else:
        raise ValueError(f"fusion {how!r}: expected 'concat' or 'mean'")
    return torch.nn.functional.normalize(f, dim=1)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` for mean-teacher targets (Tarvainen & Valpola 2017)."""
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, momentum: float) -> None:
    """``ema <- momentum * ema + (1 - momentum) * model`` for parameters; buffers copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(momentum).add_(pm.detach(), alpha=1 - momentum)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def epoch_lr(base_lr: float, epoch: int, i: int, steps: int, epochs: int, warmup_epochs: int) -> float:
    """Learning rate at step ``i`` of ``steps`` in ``epoch``: warm-up then cosine over
    fractional epochs (the number of steps per epoch changes with the pseudo labels)."""
    scale = 1000
    t = int(scale * (epoch + i / max(steps, 1)))
    return base_lr * lr_factor(t, scale * epochs, scale * warmup_epochs)
