"""The one training driver of every stage: the supervised trainer, stage 1 (CMAM) and
stage 2 (self-training).

In the manner of torchreid's ``Engine`` and cluster-contrast's trainer + script: the
driver (:func:`train`) owns what every run does the same way,

* resume: load ``checkpoint.pt`` (on rank 0, broadcast), check the config, restore the
  modules, optimiser, AMP scaler, batch generator and global RNGs, drop the log rows of
  the epochs it redoes; a fresh run in a run folder replaces an old log;
* the epoch loop: train mode, the batches with a progress bar, the learning rate of each
  step, the optimiser step (``zero_grad``, scaled ``backward``, ``step``, ``update``),
  the running means of the logged terms;
* after an epoch: the means over the global batch (distributed), the BatchNorm buffers
  of rank 0 on every rank and a hash of each rank's state, one ``log.jsonl`` row,
  an atomic checkpoint, the ``on_epoch_end`` hook;

while a :class:`Stage` supplies what differs: its modules and optimiser (built in its
constructor), its labels and batches per epoch (:meth:`Stage.begin_epoch`), the learning
rate of a step, the losses of a step (:meth:`Stage.step`), what follows a step (memory
and EMA updates) and what it adds to the checkpoint.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import distributed as dist
from ..data.loading import load_images
from ..data.records import Record
from .common import Checkpointer, JsonlLogger, check_resume_config, config_to_dict, rng_state, set_lr, set_rng_state

__all__ = [
    "DriverResult",
    "Stage",
    "StopTraining",
    "restore_training_state",
    "train",
    "training_images",
    "training_state",
]


def training_state(modules: dict[str, nn.Module | None], opt, scaler, gen: torch.Generator) -> dict:
    """The resumable part of a checkpoint: ``modules`` state dicts under their names
    (None for an absent module), optimiser, AMP scaler, batch generator and global RNGs."""
    state: dict = {k: None if m is None else m.state_dict() for k, m in modules.items()}
    state.update(optimizer=opt.state_dict(), scaler=scaler.state_dict(), gen=gen.get_state(), rng=rng_state())
    return state


def restore_training_state(
    state: dict, modules: dict[str, nn.Module | None], opt, scaler, gen: torch.Generator
) -> None:
    """Inverse of :func:`training_state`: load everything back in place (absent modules skipped)."""
    for k, m in modules.items():
        if m is not None:
            m.load_state_dict(state[k])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    gen.set_state(state["gen"])
    set_rng_state(state["rng"])


class StopTraining(Exception):
    """Raised by an ``on_epoch_end`` hook to stop a run after a checkpoint (tests use it
    to simulate a killed run)."""


def training_images(
    records: Sequence[Record],
    images: torch.Tensor | None,
    size: tuple[int, int],
    progress: bool,
    desc: str = "decoding",
) -> torch.Tensor:
    """A stage's training images: ``images`` ``(N, 3, H, W)`` uint8 as given (decoded at ``size``
    here when None), checked to hold one row per record."""
    if images is None:
        images = load_images(records, size, progress=progress, desc=desc)
    if images.shape[0] != len(records):
        raise ValueError(f"images has {images.shape[0]} rows for {len(records)} records")
    return images


class Stage:
    """What a training stage supplies to :func:`train`.

    Attributes set by a stage's constructor:
        name: the checkpoint's ``"stage"`` entry (``"supervised"``, ``"cmam"``, ``"selftrain"``).
        desc: the progress bar's label (``"stage 1"``).
        config: the run's config dataclass (checked on resume, saved in the checkpoint).
        epochs: number of epochs.
        modules: checkpointed modules by name (None: absent in this run).
        train_modules: modules put in train mode at the start of every epoch.
        eval_modules: modules put in eval mode when the run ends.
        buffer_modules: modules whose buffers (BatchNorm statistics) are copied from rank 0
            after every epoch of a distributed run.
        opt / scaler / gen: optimiser, AMP grad scaler and the batch generator; a stage may
            replace ``opt`` and ``scaler`` in :meth:`begin_epoch` (stage 1's second run).
        loss_prefix: prefix of the logged terms' keys in a log row.
    """

    name: str = "stage"
    desc: str = "training"
    config: Any
    epochs: int
    modules: dict[str, nn.Module | None]
    train_modules: list[nn.Module]
    eval_modules: list[nn.Module]
    buffer_modules: list[nn.Module | None] = []
    opt: torch.optim.Optimizer
    scaler: Any
    gen: torch.Generator
    loss_prefix: str = "loss_"

    def check_resume(self, state: dict, path: Path | None) -> None:
        """Raise if the checkpoint ``state`` cannot continue this run (the config is checked already)."""

    def restore(self, state: dict) -> None:
        """Take the stage's own entries back from a checkpoint (after the modules are restored)."""

    def wrap(self) -> None:
        """Called once after resume, before the first epoch (DDP wrappers)."""

    def begin_epoch(self, epoch: int) -> tuple[dict, list[np.ndarray]]:
        """The epoch's labels: returns its log row so far (``{"epoch": epoch, ...}``) and its batches
        (index arrays into the training images)."""
        raise NotImplementedError

    def lr(self, epoch: int, i: int, n_batches: int) -> float:
        """Learning rate of step ``i`` of ``n_batches`` in ``epoch``."""
        raise NotImplementedError

    def step(self, epoch: int, i: int, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Losses of one batch: ``(loss to back-propagate, {name: value to log})``."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After the optimiser step (memory and EMA updates)."""

    def end_epoch(self, epoch: int, row: dict) -> None:
        """Add to the epoch's log row after its training (e.g. an evaluation)."""

    def extra_state(self) -> dict:
        """The stage's own checkpoint entries (labels, label-file hash, ...)."""
        return {}


@dataclass
class DriverResult:
    """What :func:`train` returns.

    Attributes:
        history: the log rows, one per epoch (those of a resumed run's earlier epochs included).
        seconds: wall time of this call's epoch loop.
        train_seconds: time spent in training steps over the whole run (resumes included).
        n_seen: training images seen over the whole run.
    """

    history: list[dict]
    seconds: float
    train_seconds: float
    n_seen: int


def _value(v: torch.Tensor | float) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def train(
    stage: Stage,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log_path: str | os.PathLike | None = None,
) -> DriverResult:
    """Run ``stage``'s epochs (see the module docstring for what the driver does).

    Args:
        stage: a constructed :class:`Stage`.
        run_dir: folder of ``log.jsonl`` and ``checkpoint.pt`` (rank 0 writes); None keeps
            everything in memory.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists; the result equals that
            of an uninterrupted run with the same config.
        progress: progress bars (rank 0 only).
        on_epoch_end: ``hook(epoch, log_row)`` after the epoch's checkpoint; raising
            :class:`cmamlib.training.driver.StopTraining` stops the run.
        log_path: a log file without a run folder (the supervised trainer's ``log_path``);
            appended to, never cleared.
    """
    main = dist.is_main()
    progress = progress and main
    ckpt = Checkpointer(run_dir if main else None)
    if run_dir is not None:
        log_path = Path(run_dir) / "log.jsonl"
    logger = JsonlLogger(log_path if main else None)
    start_epoch, train_seconds, n_seen = 0, 0.0, 0
    state = dist.run_on_main(ckpt.load) if resume else None
    if state is not None:
        check_resume_config(state, stage.config, ckpt.path)
        stage.check_resume(state, ckpt.path)
        restore_training_state(state, stage.modules, stage.opt, stage.scaler, stage.gen)
        start_epoch = int(state["epoch"]) + 1
        train_seconds, n_seen = state["train_seconds"], state["n_seen"]
        stage.restore(state)
        logger.truncate_to(start_epoch)
    elif run_dir is not None:
        logger.start_fresh()  # a fresh run replaces an old log
    stage.wrap()
    t0 = time.time()
    for epoch in range(start_epoch, stage.epochs):
        te = time.time()
        row, batches = stage.begin_epoch(epoch)
        for m in stage.train_modules:
            m.train()
        sums: dict[str, float] = {}
        ts, seen0 = time.time(), n_seen
        bar = tqdm(batches, desc=f"{stage.desc} epoch {epoch + 1}/{stage.epochs}", disable=not progress, leave=False)
        for i, idx in enumerate(bar):
            set_lr(stage.opt, stage.lr(epoch, i, len(batches)))
            loss, logged = stage.step(epoch, i, idx)
            stage.opt.zero_grad(set_to_none=True)
            stage.scaler.scale(loss).backward()
            stage.scaler.step(stage.opt)
            stage.scaler.update()
            stage.after_step()
            n_seen += len(idx)
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + _value(v)
            if progress:
                bar.set_postfix(loss=f"{_value(loss):.3f}")
        epoch_train_seconds = time.time() - ts
        train_seconds += epoch_train_seconds
        sums = dist.all_reduce_mean(sums)  # the global-batch means (identity in one process)
        row.update({f"{stage.loss_prefix}{k}": v / max(len(batches), 1) for k, v in sums.items()})
        row.update({"batches": len(batches), "lr_end": stage.opt.param_groups[0]["lr"]})
        row["train_images_per_second"] = (n_seen - seen0) / max(epoch_train_seconds, 1e-9)
        if dist.is_distributed():  # BN running stats of rank 0 everywhere, then prove the ranks agree
            dist.sync_buffers(stage.buffer_modules)
            row["world_size"] = dist.world_size()
            row["rank_state_hashes"] = dist.all_gather_object(dist.state_hash(stage.modules))
        stage.end_epoch(epoch, row)
        row["seconds"] = time.time() - te
        logger.log(row)
        ckpt.save(
            {
                **training_state(stage.modules, stage.opt, stage.scaler, stage.gen),
                "epoch": epoch,
                "train_seconds": train_seconds,
                "n_seen": n_seen,
                "config": config_to_dict(stage.config),
                "stage": stage.name,
                **stage.extra_state(),
            }
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    seconds = time.time() - t0
    for m in stage.eval_modules:
        m.eval()
    logger.close()
    return DriverResult(history=logger.rows, seconds=seconds, train_seconds=train_seconds, n_seen=n_seen)
