"""Data loading and the stage-1 input pipeline, measured in one run.

1. Decoding: the decode-once store (:func:`cmamlib.data.loading.load_images`, threads)
   against the obvious oracle, one PIL open + resize per image in a Python loop
   (what a per-item ``Dataset.__getitem__`` does every epoch); equal outputs checked.
2. Training input pipeline: one stage-1 epoch of :func:`cmamlib.training.cmam.run_cmam`
   (indexing, augmentation, gray view, the three network passes, losses, optimiser,
   memory updates; clustering and feature extraction excluded) in images/s, against the
   pure forward + backward of the same networks on the same batches prepared in
   advance. Goal: the epoch at >= 80% of the pure speed, i.e. the input pipeline is not
   the bottleneck.

    python benchmarks/bench_loading.py [--data data] [--epochs 1]

Uses ``data/Market-1501-synth`` (``make data``); generates the small preset in a temp
folder when it is missing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cmamlib.data import read_market1501
from cmamlib.data.loading import load_images
from cmamlib.data.transforms import augment, gray_of_normalised, pil_resize, to_float
from cmamlib.models import build_model
from cmamlib.training.cmam import CMAMConfig, run_cmam


def oracle_decode(records, size):
    out = []
    for r in records:
        with Image.open(r.path) as im:
            out.append(np.asarray(pil_resize(im.convert("RGB"), size)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def pure_step_speed(cfg: CMAMConfig, images: torch.Tensor, n_batches: int) -> float:
    """Images/s of forward + backward of F_rg (both views) and F_g (gray view) on
    batches built beforehand (augmentation excluded from the timing)."""
    torch.manual_seed(0)
    rg = build_model(cfg.arch, width=cfg.width, last_stride=cfg.last_stride)
    g = build_model(cfg.arch, width=cfg.width, last_stride=cfg.last_stride)
    opt = torch.optim.Adam(list(rg.parameters()) + list(g.parameters()), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(n_batches):
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        x = augment(to_float(images[idx]), cfg.augment, gen)
        batches.append((x, gray_of_normalised(x, cfg.gray_mode, gen)))
    t0 = time.perf_counter()
    for x, xg in batches:
        o = rg(torch.cat([x, xg]))
        og = g(xg)
        loss = o.bn_feat.pow(2).mean() + og.bn_feat.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n_batches * cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    root = Path(args.data) / "Market-1501-synth"
    if not root.exists():
        from cmamlib.data.synth import generate

        tmp = Path(tempfile.mkdtemp())
        generate(tmp, "small", seed=0, progress=False)
        root = tmp / "Market-1501-synth"
    recs = read_market1501(root, "train")
    cfg = CMAMConfig(device="cpu")
    size = cfg.image_size

    t0 = time.perf_counter()
    ref = oracle_decode(recs, size)
    t_oracle = time.perf_counter() - t0
    t0 = time.perf_counter()
    imgs = load_images(recs, size, progress=False)
    t_fast = time.perf_counter() - t0
    assert torch.equal(ref, imgs), "decode-once store differs from the oracle"
    print(
        f"decode {len(recs)} images at {size[0]}x{size[1]}: oracle loop {t_oracle:.2f} s "
        f"({len(recs) / t_oracle:.0f} img/s), load_images {t_fast:.2f} s ({len(recs) / t_fast:.0f} img/s), "
        f"speed-up {t_oracle / t_fast:.1f}x; outputs equal"
    )
    print("  and once decoded, an epoch re-reads nothing: a per-item Dataset pays the oracle cost every epoch")

    res = run_cmam(replace(cfg, epochs=args.epochs), recs, imgs, progress=False)
    epoch_speed = res.images_per_second
    n_batches = sum(h["batches"] for h in res.history)
    pure = pure_step_speed(cfg, imgs, min(n_batches, 30))
    print(
        f"stage-1 training epoch (width {cfg.width}, {size[0]}x{size[1]}, batch {cfg.batch_size}, 3 passes/image): "
        f"{epoch_speed:.0f} img/s; pure forward+backward on prepared batches {pure:.0f} img/s; "
        f"ratio {epoch_speed / pure:.0%} (goal >= 80%)"
    )


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
