"""Small shared helpers: seeding, device selection, atomic checkpoint writes and safe
checkpoint reads."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS if available, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available on this machine")
    return dev


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or a failing write: disk full, permission) at any point leaves the previous
    file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds Python objects that :func:`load_checkpoint` does not unpickle
    (anything beyond tensors, numbers, strings, containers and numpy arrays)."""


def _numpy_safe_globals() -> list:
    """The numpy globals a cmamlib checkpoint holds (label arrays, numpy's RNG state):
    the array rebuild function, ``ndarray``, ``dtype`` and the dtype classes of the
    numeric dtypes. None of them runs code of the file's choosing; the elements of an
    object array would still go through the weights-only unpickler."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    out: list = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    ):
        out.append(type(np.dtype(t)))
    return out


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` of a cmamlib checkpoint with ``weights_only=True``: tensors, plain
    Python values and numpy arrays are read, nothing else is unpickled, so a shared
    checkpoint cannot run code when it is loaded.

    Raises:
        UnsafeCheckpointError: the file holds other Python objects (the message names the
            file and the refused global); a cmamlib run never writes such a file.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors, numbers, strings "
            f"and numpy arrays ({detail}). cmamlib checkpoints never do; a file that does could run code "
            "when unpickled: open it with plain torch.load only if you trust its author."
        ) from None
