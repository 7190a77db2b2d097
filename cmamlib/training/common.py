"""Pieces shared by the training stages: optimiser and schedule, AMP, logs, checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ..features import amp_cast_dtype
from ..utils import atomic_save, load_checkpoint


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (re-ID baselines: lr 3.5e-4, weight decay 5e-4)."""
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warm-up from 0.1 to 1 over ``warmup_steps``, then ``"cosine"`` decay to 0.01
    at ``total_steps``, or ``"constant"``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return 0.1 + 0.9 * step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"schedule {schedule!r}: expected 'cosine' or 'constant'")
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


AMP_DTYPES = ("float16", "bfloat16")


def check_amp_dtype(dtype: str) -> None:
    """Refuse an ``amp_dtype`` other than :data:`AMP_DTYPES`, naming the value."""
    if dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype={dtype!r}: expected one of {list(AMP_DTYPES)}")


def autocast(device: torch.device, enabled: bool, dtype: str = "float16"):
    """``torch.autocast`` when enabled: on CUDA in ``dtype`` (float16 or bfloat16), on
    the CPU in bfloat16 (:func:`amp_cast_dtype`); a no-op context when disabled or on
    other devices."""
    check_amp_dtype(dtype)
    if not enabled or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_cast_dtype(device, dtype))


def make_scaler(device: torch.device, enabled: bool, dtype: str = "float16"):
    """GradScaler for float16 AMP on CUDA; a disabled scaler otherwise (bf16 needs none)."""
    return torch.amp.GradScaler("cuda", enabled=bool(enabled and device.type == "cuda" and dtype == "float16"))


def to_memory_format(module_or_batch, channels_last: bool):
    """A model (in place) or a ``(B, C, H, W)`` batch in ``channels_last`` memory format
    when asked (faster convolutions with AMP on recent NVIDIA GPUs); unchanged otherwise.
    The values are the same either way (tested on CPU)."""
    if not channels_last:
        return module_or_batch
    if isinstance(module_or_batch, torch.nn.Module):
        return module_or_batch.to(memory_format=torch.channels_last)
    return module_or_batch.contiguous(memory_format=torch.channels_last)


def gather_batch(
    images: torch.Tensor, idx: torch.Tensor, device: torch.device, pin_memory: bool = True
) -> torch.Tensor:
    """Rows ``idx`` of the decoded ``(N, 3, H, W)`` uint8 image store, on ``device``.

    On CUDA with ``pin_memory`` the gathered rows are staged in page-locked memory and
    copied asynchronously (``non_blocking``), so the copy overlaps the previous step's
    kernels; on a CPU the rows are simply indexed. A store already on ``device`` is
    indexed there."""
    if images.device == device:
        return images[idx.to(device)]
    rows = images[idx.cpu()]
    if pin_memory and device.type == "cuda":
        rows = rows.pin_memory()
    return rows.to(device, non_blocking=True)


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package is installed (``pip install
    cmamlib[tensorboard]``; the locked dev environment has it)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_tag(key: str) -> str:
    """TensorBoard tag of a log field: its first word becomes the group
    (``loss_mem_a`` -> ``loss/mem_a``, ``vis_clusters`` -> ``vis/clusters``)."""
    head, _, rest = key.partition("_")
    return f"{head}/{rest}" if rest else f"run/{head}"


class JsonlLogger:
    """Append one JSON object per line (per epoch) to ``path``; also kept in ``.rows``.

    ``log.jsonl`` is the source of truth. When the ``tensorboard`` package is installed
    (``tensorboard=None``: detect it) every numeric field of a row is also written as a
    TensorBoard scalar (:func:`tensorboard_tag`, step = the row's ``epoch``) into event
    files beside ``path`` (the run folder), so ``tensorboard --logdir runs`` shows every
    run; a resumed run purges the events of the epochs it redoes."""

    def __init__(self, path: str | os.PathLike | None, tensorboard: bool | None = None):
        self.path = Path(path) if path is not None else None
        self.rows: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tensorboard = self.path is not None and (tensorboard_available() if tensorboard is None else tensorboard)
        self._writer = None
        self._purge_step: int | None = None

    def start_fresh(self) -> None:
        """A new run in this folder: remove the old ``log.jsonl`` and TensorBoard events."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        for f in self.path.parent.glob("events.out.tfevents.*"):
            f.unlink(missing_ok=True)

    def log(self, row: dict) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        self.rows.append(row)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.tensorboard:
            self._write_scalars(row)

    def _write_scalars(self, row: dict) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path.parent), purge_step=self._purge_step)
        step = int(row.get("epoch", len(self.rows) - 1))
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._writer.add_scalar(tensorboard_tag(k), float(v), step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (``log.jsonl`` needs nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def truncate_to(self, epochs: int) -> None:
        """Keep rows of epochs < ``epochs`` (resume after a kill): rewrites the file; the
        TensorBoard events of epochs >= ``epochs`` are purged when the run logs again."""
        self._purge_step = epochs
        if self.path is None or not self.path.exists():
            return
        all_rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        rows = [r for r in all_rows if r.get("epoch", -1) < epochs]
        self.rows = rows
        if len(rows) == len(all_rows):  # nothing to drop (a complete run loaded): leave the file as it is
            return
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and callable(v.item) and getattr(v, "shape", None) == ():
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def config_to_dict(cfg: Any) -> dict:
    """Dataclass config -> JSON-serialisable dict (nested dataclasses, tuples as lists)."""
    if is_dataclass(cfg):
        return json.loads(json.dumps(asdict(cfg), default=str))
    return dict(cfg)


def config_from_dict(cls, d: dict):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys by name."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known: {sorted(names)}")
    kw = {}
    for k, v in d.items():
        f = names[k]
        if is_dataclass(
            f.default_factory() if callable(getattr(f, "default_factory", None)) else f.default
        ) and isinstance(v, dict):
            sub = f.default_factory() if callable(getattr(f, "default_factory", None)) else f.default
            kw[k] = config_from_dict(type(sub), v)
        elif isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return cls(**kw)


class CheckpointError(OSError):
    """Writing a checkpoint failed (disk full, permission...); names the path and says
    that the previous checkpoint is intact."""


class Checkpointer:
    """Per-epoch checkpoints of a run folder, written atomically.

    ``<run_dir>/checkpoint.pt`` holds the latest complete epoch (state dicts, optimiser,
    RNG states, config, epoch); a crash or a failed write at any point leaves the
    previous complete checkpoint in place (temp file + rename, see
    :func:`cmamlib.utils.atomic_save`).
    """

    def __init__(self, run_dir: str | os.PathLike | None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None and self.run_dir.is_dir():
            # temp files of a run killed while writing (never a complete checkpoint)
            for tmp in self.run_dir.glob(".checkpoint.pt.*.tmp"):
                tmp.unlink(missing_ok=True)

    @property
    def path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        state = dict(state, saved_at=time.time())
        try:
            atomic_save(state, self.path)
        except OSError as e:  # disk full, permission, quota, I/O error
            kept = (
                "the previous checkpoint there is intact" if self.path.exists() else "no checkpoint was written before"
            )
            raise CheckpointError(
                e.errno,
                f"could not write checkpoint {self.path} (epoch {state.get('epoch')}): "
                f"{e.strerror or e}; {kept}: free space or fix permissions and rerun to resume",
            ) from e

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        return load_checkpoint(self.path)


#: Config fields that may differ between a run and its resumption (hardware, not method).
RESUME_FREE_FIELDS = ("device", "eval_batch_size", "channels_last", "pin_memory", "test_feature")


def check_resume_config(state: dict, cfg: Any, path: Any) -> None:
    """Raise if the checkpoint ``state`` was written with another config than ``cfg``
    (a resumed run must be the same run), naming the differing fields."""
    old, new = state.get("config", {}), config_to_dict(cfg)
    # a field added to the config class after the checkpoint was written counts as equal
    # when the run keeps its default (the checkpoint's run had that behaviour), except the
    # fields whose default changed the behaviour of this config (its ``resume_strict_fields()``)
    strict = set(cfg.resume_strict_fields()) if hasattr(cfg, "resume_strict_fields") else set()
    defaults: dict = {}
    if is_dataclass(cfg) and set(new) - set(old):
        try:
            defaults = config_to_dict(type(cfg)())
        except TypeError:
            defaults = {}
    diff = sorted(
        k
        for k in set(old) | set(new)
        if k not in RESUME_FREE_FIELDS
        and old.get(k) != new.get(k)
        and not (k not in old and k not in strict and k in defaults and new.get(k) == defaults[k])
    )
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8])
        raise ValueError(
            f"cannot resume from {path}: it was written with another config ({detail}); "
            "use another run folder or resume=False"
        )


def weights_fingerprint(*models: torch.nn.Module | None) -> str:
    """SHA-256 of the models' state dicts (names, dtypes, shapes and values; None
    entries count as absent): identifies the weights a run started from."""
    import hashlib

    h = hashlib.sha256()
    for m in models:
        h.update(b"<model>" if m is not None else b"<none>")
        if m is None:
            continue
        for name, t in m.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def rng_state() -> dict:
    """Snapshot of the torch / numpy / python RNG states (for exact resume)."""
    import random

    import numpy as np

    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
