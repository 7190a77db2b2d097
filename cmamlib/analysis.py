"""Analysis helpers for the notebooks: intensity statistics of image views (notebook 01).

Modality-gap metrics and embeddings (notebook 04) belong here too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .data.records import Record
from .data.transforms import gray_view, pil_to_uint8, to_float


def _view_pixels(records: Sequence[Record], mode: str, rng: np.random.Generator, max_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pick = rng.choice(len(records), min(max_images, len(records)), replace=False)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    pix, means, stds = [], [], []
    for i in sorted(pick):
        with Image.open(records[i].path) as im:
            x = to_float(pil_to_uint8(im.convert("RGB"))[None])
        g = gray_view(x, mode, gen)[0, 0].numpy() * 255.0
        pix.append(g.ravel())
        means.append(g.mean())
        stds.append(g.std())
    return np.concatenate(pix), np.array(means), np.array(stds)


def intensity_statistics(
    groups: dict[str, tuple[Sequence[Record], str]],
    reference: str | None = None,
    max_images: int = 300,
    seed: int = 0,
    sample_size: int = 200_000,
) -> dict[str, dict]:
    """Intensity statistics of gray views of image groups.

    Args:
        groups: ``name -> (records, gray_mode)``; each image is turned into its gray view
            (:func:`cmamlib.data.transforms.gray_view`, ``"luma"`` or
            ``"random_channel"``; an infrared image is gray already, so any mode returns
            it unchanged up to rounding).
        reference: the group the others are compared with (1-D Wasserstein distance of
            the pixel intensity distributions, in gray levels 0-255).
        max_images: images drawn per group (seeded).
        sample_size: pixels kept per group in the returned ``sample`` (for histograms).

    Returns:
        ``name -> {mean, std, image_mean_std, image_contrast_mean, wasserstein_to_reference,
        sample}``: mean and std of all pixels, the spread of per-image mean brightness, the
        mean per-image contrast (std), the distance to the reference (0 for itself), and a
        pixel sample (uint8 array).
    """
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)
    pix = {}
    out: dict[str, dict] = {}
    for name, (records, mode) in groups.items():
        if not records:
            raise ValueError(f"intensity_statistics: group {name!r} has no images")
        p, m, s = _view_pixels(records, mode, rng, max_images)
        pix[name] = p
        keep = rng.choice(len(p), min(sample_size, len(p)), replace=False)
        out[name] = {
            "mean": float(p.mean()),
            "std": float(p.std()),
            "image_mean_std": float(m.std()),
            "image_contrast_mean": float(s.mean()),
            "sample": np.clip(np.round(p[keep]), 0, 255).astype(np.uint8),
        }
    if reference is not None:
        if reference not in pix:
            raise ValueError(f"reference {reference!r} is not one of the groups {list(groups)}")
        ref = out[reference]["sample"].astype(np.float64)
        for name in out:
            out[name]["wasserstein_to_reference"] = float(wasserstein_distance(out[name]["sample"].astype(np.float64), ref))
    return out
