"""Image transforms in plain torch (batched, on any device) and PIL; no torchvision.

The training pipeline decodes every image once (:mod:`cmamlib.data.loading`) into a
``uint8`` tensor ``(N, 3, H, W)`` and augments whole batches on the training device,
so the input pipeline costs a few tensor ops per batch instead of per-image Python.
All randomness comes from an explicit ``torch.Generator`` (CPU), so a seed fixes
every crop, flip and erased box on any device.

Conventions: ``x`` is ``(B, 3, H, W)``; ``uint8`` in ``[0, 255]`` or float in
``[0, 1]`` before :func:`normalize`, float normalised (ImageNet mean/std) after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma weights, as PIL's ``Image.convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- PIL level
def pil_resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a PIL image to ``size = (H, W)`` with bilinear interpolation (+ antialias)."""
    h, w = size
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> ``(3, H, W)`` uint8 tensor (gray and RGBA converted to RGB)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- tensor level
def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (float input returned as float32)."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel; ``x`` float in ``[0, 1]``, ``(B, 3, H, W)``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float batch ``(B, 3, H, W)`` to ``size = (H', W')`` (antialiased)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def gray_luma(x: torch.Tensor) -> torch.Tensor:
    """Gray "fake infrared" view: BT.601 luma replicated to 3 channels.

    Args:
        x: ``(B, 3, H, W)`` float in ``[0, 1]`` (or uint8).
    Returns:
        ``(B, 3, H, W)`` float, every channel equal to ``0.299 R + 0.587 G + 0.114 B``
        (PIL's ``convert("L")`` up to its integer rounding, i.e. within 1/255).
    """
    xf = to_float(x)
    w = torch.tensor(LUMA_WEIGHTS, dtype=xf.dtype, device=xf.device).view(1, 3, 1, 1)
    g = (xf * w).sum(1, keepdim=True)
    return g.expand(-1, 3, -1, -1).contiguous()


def gray_random_channel(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Random-channel gray (the CMAM authors' code): per image one of R, G, B, replicated.

    Args:
        x: ``(B, 3, H, W)``.
        gen: CPU generator for the channel choice.
    Returns:
        ``(B, 3, H, W)`` with ``out[b, c] = x[b, k_b]`` for a random ``k_b``.
    """
    b = x.shape[0]
    k = torch.randint(0, 3, (b,), generator=gen).to(x.device)
    idx = k.view(b, 1, 1, 1).expand(b, 1, *x.shape[2:])
    return torch.gather(x, 1, idx).expand(-1, 3, -1, -1).contiguous()


def gray_view(
    x: torch.Tensor,
    mode: str = "random_channel",
    gen: torch.Generator | None = None,
    fake_ir: torch.Tensor | None = None,
    fake_ir_weight: float = 0.2,
) -> torch.Tensor:
    """The gray view of docs/method.md (``gray_mode``): "random_channel" (default) or "luma".

    When user-supplied generated fake-IR images ``fake_ir`` (same shape) are given, the
    view is ``fake_ir_weight * fake_ir + (1 - fake_ir_weight) * gray`` (0.2 / 0.8 in the
    authors' code).  Input and output float in ``[0, 1]``, ``(B, 3, H, W)``.
    """
    xf = to_float(x)
    if mode == "random_channel":
        g = gray_random_channel(xf, gen)
    elif mode == "luma":
        g = gray_luma(xf)
    else:
        raise ValueError(f"gray mode {mode!r}: expected 'random_channel' or 'luma'")
    if fake_ir is not None:
        if fake_ir.shape != g.shape:
            raise ValueError(f"fake_ir shape {tuple(fake_ir.shape)} != image batch shape {tuple(g.shape)}")
        g = fake_ir_weight * to_float(fake_ir) + (1 - fake_ir_weight) * g
    return g


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean`` per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x * s + m


def gray_of_normalised(
    x: torch.Tensor, mode: str = "random_channel", gen: torch.Generator | None = None
) -> torch.Tensor:
    """Gray view of an already augmented and normalised batch (so both views share the
    crop, flip and erasing): denormalise, :func:`gray_view`, normalise again.
    ``(B, 3, H, W)`` float in, same shape out."""
    return normalize(gray_view(denormalize(x), mode, gen))


def channel_exchange(x: torch.Tensor, p: float = 0.5, gen: torch.Generator | None = None) -> torch.Tensor:
    """Channel augmentation (Ye et al., ICCV 2021, "CAJ"): with probability ``p`` per
    image either replicate one random channel to all three or randomly permute the
    channels (each half of the time). ``x``: ``(B, 3, H, W)``."""
    b = x.shape[0]
    apply = torch.rand(b, generator=gen) < p
    replicate = torch.rand(b, generator=gen) < 0.5
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])  # (B, 3)
    single = torch.randint(0, 3, (b,), generator=gen)
    idx = torch.where(replicate[:, None], single[:, None].expand(b, 3), perms)
    idx = torch.where(apply[:, None], idx, torch.arange(3).expand(b, 3))
    idx = idx.to(x.device).view(b, 3, 1, 1).expand(b, 3, *x.shape[2:])
    return torch.gather(x, 1, idx)


def random_flip(x: torch.Tensor, p: float = 0.5, gen: torch.Generator | None = None) -> torch.Tensor:
    """Horizontal flip of each image with probability ``p``."""
    m = (torch.rand(x.shape[0], generator=gen) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(-1), x)


def pad_random_crop(x: torch.Tensor, pad: int = 10, gen: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels on each side, then crop back to ``(H, W)`` at a random
    per-image offset (as ``T.Pad(10), T.RandomCrop((H, W))`` of re-ID pipelines)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None]).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    xr = torch.gather(xp, 2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device)[None]).view(b, 1, 1, w).expand(b, c, h, w)
    return torch.gather(xr, 3, cols)


def random_erasing(
    x: torch.Tensor,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with probability ``p`` per image, fill a
    random rectangle of relative area in ``area`` and aspect ratio in ``ratio``
    (log-uniform) with ``value`` (0 = the mean colour on normalised input)."""
    b, _, h, w = x.shape
    apply = torch.rand(b, generator=gen) < p
    a = (area[0] + (area[1] - area[0]) * torch.rand(b, generator=gen)) * h * w
    logr = torch.log(torch.tensor(ratio[0])) + (torch.log(torch.tensor(ratio[1] / ratio[0]))) * torch.rand(
        b, generator=gen
    )
    r = torch.exp(logr)
    eh = torch.sqrt(a * r).round().clamp(1, h).long()
    ew = torch.sqrt(a / r).round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh + 1).float()).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew + 1).float()).long()
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    m = (
        (yy >= y0.view(b, 1, 1))
        & (yy < (y0 + eh).view(b, 1, 1))
        & (xx >= x0.view(b, 1, 1))
        & (xx < (x0 + ew).view(b, 1, 1))
    )
    m = (m & apply.view(b, 1, 1)).unsqueeze(1).to(x.device)
    return x.masked_fill(m, value)


@dataclass
class AugmentConfig:
    """Training augmentation (re-ID standard; docs/method.md "Defaults").

    Attributes:
        flip: horizontal flip probability.
        pad: zero padding before the random crop (pixels at the training size).
        erasing: random erasing probability (0 disables).
        channel_aug: channel exchange probability (CAJ); 0 disables.
        jitter: brightness/contrast jitter strength (0 disables).
    """

    flip: float = 0.5
    pad: int = 4
    erasing: float = 0.5
    channel_aug: float = 0.0
    jitter: float = 0.0


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness and contrast jitter by factors in ``[1 - s, 1 + s]`` (float [0, 1])."""
    if strength <= 0:
        return x
    b = x.shape[0]
    br = (1 + strength * (2 * torch.rand(b, generator=gen) - 1)).to(x.device).view(b, 1, 1, 1)
    ct = (1 + strength * (2 * torch.rand(b, generator=gen) - 1)).to(x.device).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * ct + mean * br).clamp_(0, 1)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """Spatial + photometric augmentation of a float ``[0, 1]`` batch, then normalisation.

    Order: jitter, channel exchange, flip, pad + crop, normalise, erasing (erased
    boxes take the mean colour).  Returns the normalised float batch.
    """
    x = color_jitter(x, cfg.jitter, gen)
    if cfg.channel_aug > 0:
        x = channel_exchange(x, cfg.channel_aug, gen)
    x = random_flip(x, cfg.flip, gen)
    x = pad_random_crop(x, cfg.pad, gen)
    x = normalize(x)
    if cfg.erasing > 0:
        x = random_erasing(x, cfg.erasing, gen=gen)
    return x
