"""Decode-once image store and batch iteration (the data-loading hot path).

Every image of a split is decoded and resized once, in parallel threads (PIL releases
the GIL while decoding and resizing), into one ``uint8`` tensor ``(N, 3, H, W)``;
optionally cached on disk as ``.npy`` (memory-mapped on reload, so a dataset larger
than RAM still works).  Training batches are then a tensor index plus batched
augmentation on the training device (:mod:`cmamlib.data.transforms`), which keeps the
input pipeline far from being the bottleneck (``benchmarks/bench_loading.py``).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .records import DatasetError, Record
from .transforms import normalize, pil_resize, to_float


def _decode(path: str, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = pil_resize(im.convert("RGB"), size)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image {path}: file not found") from None
    except Exception as e:  # PIL raises many types for truncated / non-image files
        raise DatasetError(f"image {path}: cannot decode as an image ({type(e).__name__}: {e})") from None


def _decode_or_reason(path: str, size: tuple[int, int]) -> np.ndarray | str:
    """:func:`_decode`, or the error message (naming the path) of an unreadable image."""
    try:
        return _decode(path, size)
    except DatasetError as e:
        return str(e)


def _cache_key(paths: Sequence[str], size: tuple[int, int]) -> str:
    h = hashlib.sha1()
    h.update(f"{size[0]}x{size[1]}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DatasetError(f"image {p}: cannot stat ({e.strerror})") from None
        h.update(f"{p}\t{st.st_size}\t{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:20]


def _cache_file(cache_dir: str | os.PathLike | None, paths: Sequence[str], size: tuple[int, int]) -> Path | None:
    """``<cache_dir>/images_<key>.npy`` of these paths and size (None without a cache)."""
    if cache_dir is None or not paths:
        return None
    return Path(cache_dir) / f"images_{_cache_key(paths, size)}.npy"


def _read_cache(cache_file: Path | None, n: int, size: tuple[int, int]) -> torch.Tensor | None:
    """The cached ``(n, 3, H, W)`` images, memory-mapped, or None if absent or stale."""
    if cache_file is None or not cache_file.exists():
        return None
    arr = np.load(cache_file, mmap_mode="r")
    return torch.from_numpy(np.ascontiguousarray(arr)) if arr.shape == (n, 3, *size) else None


def load_images(
    records: Sequence[Record] | Sequence[str],
    size: tuple[int, int],
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "decoding",
) -> torch.Tensor:
    """Decode and resize every image once.

    Args:
        records: records (or plain paths), in the order of the output rows.
        size: ``(H, W)`` of the stored images (the training/test input size).
        workers: decoding threads (default: number of cores).
        cache_dir: if given, the tensor is saved as ``<cache_dir>/<key>.npy`` keyed by
            the paths, sizes and modification times, and memory-mapped on later calls.
        progress: tqdm progress bar.

    Returns:
        ``(N, 3, H, W)`` uint8 tensor.

    Raises:
        DatasetError: naming the first image that is missing or cannot be decoded.
    """
    paths = [r.path if isinstance(r, Record) else str(r) for r in records]
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive (H, W), got {size}")
    cache_file = _cache_file(cache_dir, paths, (h, w))
    if (cached := _read_cache(cache_file, len(paths), (h, w))) is not None:
        return cached
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    _decode_into(out, paths, (h, w), workers, progress, desc, bad=None)
    t = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    if cache_file is not None:
        _save_cache(t, cache_file)
    return t


def _save_cache(t: torch.Tensor, cache_file: Path) -> None:
    """Write the ``.npy`` cache atomically (temp file + rename)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npy")
    np.save(tmp, t.numpy())
    os.replace(tmp, cache_file)


def _decode_into(
    out: np.ndarray,
    paths: Sequence[str],
    size: tuple[int, int],
    workers: int | None,
    progress: bool,
    desc: str,
    bad: list[tuple[int, str]] | None,
) -> None:
    """Decode ``paths`` into the rows of ``out`` ``(N, H, W, 3)`` in parallel threads.
    ``bad`` None: the first unreadable image raises; a list: ``(row, message)`` of every
    unreadable image is appended and its row left as it was."""
    from tqdm.auto import tqdm

    fn = _decode if bad is None else _decode_or_reason
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as ex:
        it = ex.map(lambda p: fn(p, size), paths, chunksize=1)
        for i, a in enumerate(tqdm(it, total=len(paths), desc=desc, disable=not progress, leave=False)):
            if isinstance(a, str):
                bad.append((i, a))  # type: ignore[union-attr]
            else:
                out[i] = a


@dataclass
class ReadableImages:
    """What :func:`load_readable_images` returns.

    Attributes:
        images: ``(M, 3, H, W)`` uint8, the readable images, in record order.
        kept: the M indices (into the input records) of those rows.
        skipped: ``(path, reason)`` of every unreadable image, in record order.
    """

    images: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_readable_images(
    records: Sequence[Record] | Sequence[str],
    size: tuple[int, int],
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "decoding",
) -> ReadableImages:
    """:func:`load_images` that skips unreadable images instead of stopping (the
    ``skip_unreadable: true`` option of a training run): every image is tried, the
    unreadable ones are listed by path with the reason, the others returned.

    The cache (``cache_dir``) is used and written only when every image is readable.
    """
    paths = [r.path if isinstance(r, Record) else str(r) for r in records]
    h, w = int(size[0]), int(size[1])
    every = list(range(len(paths)))
    try:
        cache_file = _cache_file(cache_dir, paths, (h, w))
    except DatasetError:  # a missing file: decode (and list) without the cache
        cache_file = None
    if (cached := _read_cache(cache_file, len(paths), (h, w))) is not None:
        return ReadableImages(cached, every)
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    bad: list[tuple[int, str]] = []
    _decode_into(out, paths, (h, w), workers, progress, desc, bad=bad)
    if not bad:
        t = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
        if cache_file is not None:  # all readable: the same cache as load_images
            _save_cache(t, cache_file)
        return ReadableImages(t, every)
    bad_rows = {i for i, _ in bad}
    kept = [i for i in range(len(paths)) if i not in bad_rows]
    t = torch.from_numpy(out[kept]).permute(0, 3, 1, 2).contiguous()
    return ReadableImages(t, kept, [(paths[i], msg) for i, msg in bad])


def iterate_batches(
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    transform=None,
) -> Iterator[torch.Tensor]:
    """Yield normalised float batches ``(B, 3, H, W)`` of ``images`` in order (inference).

    Args:
        images: ``(N, 3, H, W)`` uint8.
        transform: optional function applied to the float ``[0, 1]`` batch before
            normalisation (e.g. a gray view).
    """
    for s in range(0, images.shape[0], batch_size):
        x = to_float(images[s : s + batch_size].to(device, non_blocking=True))
        if transform is not None:
            x = transform(x)
        yield normalize(x)
