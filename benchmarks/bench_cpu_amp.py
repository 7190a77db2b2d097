"""CPU AMP (bfloat16 autocast) against float32, measured in one run.

``amp=True`` on the CPU autocasts to bfloat16 (:func:`cmamlib.training.common.autocast`).
On CPUs with AVX512-BF16 / AMX (Intel Sapphire Rapids and newer, AMD Zen 4) oneDNN runs
bfloat16 convolutions faster than float32; on others bfloat16 is emulated and slower.
This script times, for the CPU presets' network (ResNet-18, base width 16) at the
calibration size (128x64) and the stage size (64x32):

* a training step (forward, a loss on the BNNeck feature, backward, Adam), batch 64,
  through the library's ``autocast``;
* inference (:func:`cmamlib.features.extract_features`), batch 256;

each in float32 and with AMP, in contiguous and ``channels_last`` memory format,
interleaved over ``--rounds`` rounds (the median is printed, so a slow moment of a
shared machine does not pick the winner), and checks that the AMP features stay close
to the float32 ones (largest 1 - cosine similarity over the images).

    python benchmarks/bench_cpu_amp.py [--rounds 3] [--steps 20] [--threads 2]

``make bench`` runs it without a target (the speed-up depends on the CPU, so it never
fails); the CPU flags it found are printed first. End to end on the CPU preset, and what
AMP does to the metrics there: docs/real-data.md (Device).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cmamlib.features import extract_features
from cmamlib.models import build_model
from cmamlib.training.common import autocast, to_memory_format

MODES = [
    ("float32", False, False),
    ("amp bf16", True, False),
    ("float32 channels_last", False, True),
    ("amp bf16 channels_last", True, True),
]


def cpu_flags() -> list[str]:
    """The bfloat16-related flags of /proc/cpuinfo (empty where it is not readable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def train_speed(size: tuple[int, int], amp: bool, channels_last: bool, steps: int, batch: int = 64) -> float:
    """Images/s of ``steps`` training steps (after 3 warm-up steps) of a fresh model."""
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model = to_memory_format(build_model("resnet18", width=16), channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    x = to_memory_format(torch.randn(batch, 3, *size), channels_last)
    y = torch.arange(batch) % 16
    head = torch.randn(16, model.feat_dim)

    def step() -> None:
        with autocast(cpu, amp, "bfloat16"):
            f = model(x).bn_feat
            loss = F.cross_entropy(F.normalize(f.float(), dim=1) @ F.normalize(head, dim=1).t() / 0.05, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def infer_speed(
    size: tuple[int, int], amp: bool, channels_last: bool, batches: int, batch: int = 256
) -> tuple[float, torch.Tensor]:
    """Images/s of :func:`extract_features` over ``batches`` batches, and its features."""
    torch.manual_seed(0)
    model = to_memory_format(build_model("resnet18", width=16), channels_last)
    data = [
        to_memory_format(torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(i)), channels_last)
        for i in range(batches)
    ]
    extract_features(model, data[:1], amp=amp, progress=False)  # warm-up
    t0 = time.perf_counter()
    f = extract_features(model, data, amp=amp, progress=False)
    return batch * batches / (time.perf_counter() - t0), f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; CPU bfloat16 flags: {' '.join(cpu_flags()) or 'none'}")
    for size in ((128, 64), (64, 32)):
        train: dict[str, list[float]] = {m[0]: [] for m in MODES}
        infer: dict[str, list[float]] = {m[0]: [] for m in MODES}
        feats: dict[str, torch.Tensor] = {}
        for _ in range(args.rounds):
            for name, amp, cl in MODES:
                train[name].append(train_speed(size, amp, cl, args.steps))
                speed, feats[name] = infer_speed(size, amp, cl, batches=4)
                infer[name].append(speed)
        base_t, base_i = statistics.median(train["float32"]), statistics.median(infer["float32"])
        print(f"\n{size[0]}x{size[1]}, ResNet-18 width 16 (median of {args.rounds} rounds):")
        print(
            f"  {'mode':24s} {'train img/s':>11s} {'speed-up':>8s} "
            f"{'infer img/s':>11s} {'speed-up':>8s} {'max 1 - cos to fp32':>19s}"
        )
        for name, _, _ in MODES:
            t, i = statistics.median(train[name]), statistics.median(infer[name])
            gap = float(1 - F.cosine_similarity(feats[name].double(), feats["float32"].double()).min())
            print(f"  {name:24s} {t:11.0f} {t / base_t:7.2f}x {i:11.0f} {i / base_i:7.2f}x {gap:19.1e}")


if __name__ == "__main__":
    main()
