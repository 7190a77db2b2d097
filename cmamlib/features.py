"""Test-time feature extraction with horizontal-flip averaging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["FEATURES", "PreBNNeck", "extract_features"]

#: ``feature`` values of :func:`extract_features`.
FEATURES = ("bnneck", "pre_bnneck")


def _images_of(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("images", "image", "img"):
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise TypeError(
        "extract_features: each batch must be a (B, 3, H, W) tensor, a tuple/list whose first "
        f"element is one, or a dict with an 'images'/'image'/'img' tensor; got {type(batch).__name__}"
    )


def _model_device(model: Callable[[Tensor], Tensor]) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def amp_cast_dtype(device: torch.device | str, dtype: str = "float16") -> torch.dtype:
    """The autocast dtype of ``amp`` on ``device`` (training and feature extraction):
    ``dtype`` (``"float16"`` or ``"bfloat16"``) on CUDA and MPS; bfloat16 on the CPU
    whatever ``dtype`` says, since CPU float16 autocast has no GradScaler and no fast
    kernels on most CPUs, while CPUs with AVX512-BF16 / AMX (Intel Sapphire Rapids and
    newer, AMD Zen 4) run bfloat16 convolutions fast (``benchmarks/bench_cpu_amp.py``)."""
    if dtype not in ("float16", "bfloat16"):
        raise ValueError(f"amp_dtype={dtype!r}: expected 'float16' or 'bfloat16'")
    if torch.device(device).type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if dtype == "bfloat16" else torch.float16


class PreBNNeck(nn.Module):
    """A :class:`cmamlib.models.ReIDNet` seen through its pooled feature: ``forward(x)`` =
    ``model.pool(model.forward_features(x))``, the GeM feature before the BNNeck (the test
    feature of the authors' code), in train and eval mode alike. Starts in ``model``'s
    mode, so :func:`extract_features` restores the mode it found."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not (hasattr(model, "pool") and hasattr(model, "forward_features")):
            raise TypeError(f"pre_bnneck features need a ReIDNet (pool + forward_features), got {type(model).__name__}")
        self.model = model
        self.feat_dim = getattr(model, "feat_dim", None)
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.pool(self.model.forward_features(x))


@torch.no_grad()
def extract_features(
    model: nn.Module | Callable[[Tensor], Tensor],
    batches: Iterable[Any],
    flip: bool = True,
    device: str | torch.device | None = None,
    amp: bool = False,
    amp_dtype: str | None = None,
    progress: bool = True,
    normalize: bool = True,
    desc: str = "features",
    feature: str = "bnneck",
) -> Tensor:
    """Features of every image, in iteration order.

    For each batch ``x``: ``f = model(x)``; with ``flip=True``,
    ``f = (model(x) + model(flip_w(x))) / 2`` (the common re-ID test-time practice:
    average the raw features of the image and its horizontal mirror); then, with
    ``normalize=True``, ``f / ||f||_2`` per row. Averaging comes first, normalisation
    last.

    The model is put in eval mode for the call (an ``nn.Module``'s previous mode is
    restored afterwards) and run under ``torch.no_grad``.

    Args:
        model: eval-mode forward ``(B, 3, H, W) -> (B, D)``, e.g. a
            :class:`cmamlib.models.ReIDNet` (returns the post-BNNeck feature), or any
            callable with that contract.
        batches: iterable of float image batches (B, 3, H, W), already normalised; a
            ``(images, ...)`` tuple/list (DataLoader style) or a dict with an
            ``"images"``/``"image"``/``"img"`` entry is accepted too.
        flip: average with the horizontally flipped batch.
        device: where to run; default: the device of the model's parameters.
        amp: autocast.
        amp_dtype: its dtype, ``"float16"`` or ``"bfloat16"``; None: float16 on CUDA,
            bfloat16 elsewhere. The CPU always autocasts to bfloat16, as training does
            (:func:`amp_cast_dtype`).
        progress: ``tqdm.auto`` progress bar (total = ``len(batches)`` when defined).
        normalize: L2-normalise each output row.
        desc: progress-bar label.
        feature: ``"bnneck"`` (``model(x)``: a ReIDNet's post-BNNeck feature) or
            ``"pre_bnneck"`` (a ReIDNet's pooled GeM feature before the BNNeck,
            :class:`PreBNNeck`; the authors' code reports it). Flip averaging and
            normalisation as above either way.

    Returns:
        (N, D) float32 on the CPU; L2-normalised rows when ``normalize``.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature={feature!r}: expected one of {FEATURES}")
    if feature == "pre_bnneck":
        model = PreBNNeck(model)  # type: ignore[arg-type]
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    if amp_dtype is None:
        amp_dtype = "float16" if dev.type == "cuda" else "bfloat16"
    cast = amp_cast_dtype(dev, amp_dtype)
    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        total = None
    out: list[Tensor] = []
    try:
        for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
            x = _images_of(batch).to(dev, non_blocking=True)
            with torch.autocast(device_type=dev.type, dtype=cast, enabled=amp):
                f = model(x).float()
                if flip:
                    f = (f + model(torch.flip(x, dims=[3])).float()) / 2
            if f.ndim != 2 or f.shape[0] != x.shape[0]:
                raise ValueError(
                    f"extract_features: model returned shape {tuple(f.shape)} for a batch of "
                    f"{x.shape[0]}; expected (B, D) (is the model in eval mode?)"
                )
            if normalize:
                f = torch.nn.functional.normalize(f, dim=1)
            out.append(f.cpu())
    finally:
        if was_training:
            model.train()  # type: ignore[union-attr]
    if not out:
        raise ValueError("extract_features: `batches` yielded no batch")
    return torch.cat(out, dim=0)
