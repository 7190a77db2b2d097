"""Paper-scale figures on this machine's device (issue 9, item 5): training images/s of
stage 1 and stage 2, feature-extraction images/s, per-modality Jaccard + DBSCAN time on
SYSU-MM01-sized features, and peak memory.

* Stage 1 / stage 2: the real :func:`run_cmam` / :func:`run_selftrain` with the
  preset's model, input size, batch, AMP and memory format, on a small in-memory set of
  random images (identities = colour-block images plus noise, so that stage 2's
  clustering finds them), a few training steps (stage 1 in its instance-discrimination
  phase, which costs the same three passes per image). ``images_per_second`` is what the runs report
  (training steps only; three forward/backward passes per image in stage 1, two in
  stage 2).
* Clustering: :func:`cmamlib.clustering.pseudo_labels` (k1 30, k2 6, eps 0.4,
  min_samples 4, as the preset's stage 2) on 22,258 visible and 11,909 infrared
  re-ID-like 2048-d features (SYSU-MM01's training set), the torch kNN (``--knn faiss``
  to try faiss when installed).
* Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process peak RSS so far
  on a CPU (``--only stage2`` gives stage 2's alone).

Writes ``reports/bench/paper_scale_<device>.json``; docs/real-data.md quotes it.

    python benchmarks/bench_paper_scale.py [--preset paper-sysu-mm01] [--steps 4] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_jaccard_sparse import make_features  # noqa: E402

from cmamlib.clustering import pseudo_labels  # noqa: E402
from cmamlib.data import INFRARED, VISIBLE, Record  # noqa: E402
from cmamlib.presets import load_config  # noqa: E402
from cmamlib.training.cmam import run_cmam  # noqa: E402
from cmamlib.training.selftrain import run_selftrain  # noqa: E402
from cmamlib.utils import resolve_device  # noqa: E402


def fake_set(ids: int, per_id: int, size: tuple[int, int], seed: int = 0) -> tuple[list[Record], torch.Tensor]:
    """``ids * per_id`` uint8 images ``(N, 3, H, W)``: an identity is a random 8 x 4 grid
    of colour blocks around a colour of its own, its images that grid plus pixel noise; the second half of each
    identity is 'infrared' (its gray)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    mean = torch.randint(30, 226, (ids, 3, 1, 1), generator=g).float()  # distinct colour per identity
    grid = (mean + torch.randint(-50, 51, (ids, 3, 8, 4), generator=g)).clamp(0, 255)
    base = torch.nn.functional.interpolate(grid, size=(h, w), mode="nearest").to(torch.int16)[:, None]
    imgs = (base + torch.randint(-12, 13, (ids, per_id, 3, h, w), generator=g, dtype=torch.int16)).clamp(0, 255)
    imgs = imgs.to(torch.uint8).reshape(ids * per_id, 3, h, w)
    recs = []
    for i in range(ids * per_id):
        pid, j = divmod(i, per_id)
        ir = j >= per_id // 2
        if ir:
            imgs[i] = imgs[i].float().mean(0, keepdim=True).round().to(torch.uint8).expand(3, h, w)
        recs.append(Record(f"fake/{pid:04d}_{j:03d}.jpg", pid, 3 if ir else 1, INFRARED if ir else VISIBLE))
    return recs, imgs


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper-sysu-mm01")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=4, help="training steps per stage")
    ap.add_argument("--knn", default="torch", help="kNN backend of the Jaccard distance: torch, faiss, auto")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=("stage1", "stage2", "clustering"),
        default=None,
        help="measure only these parts (the others are kept from an earlier output file)",
    )
    ap.add_argument(
        "--stage2-batch",
        type=int,
        default=None,
        help="stage-2 batch instead of the preset's (128 = 8 x 16 needs more than 24 GB of RAM on a CPU)",
    )
    ap.add_argument("--out", default="reports/bench")
    args = ap.parse_args()

    device = resolve_device(args.device)
    cfg = load_config(args.preset, ["require_pretrained=false"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result: dict = {
        "preset": args.preset,
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "steps": args.steps,
    }
    print(f"{args.preset} on {name}")

    parts = set(args.only or ("stage1", "stage2", "clustering"))
    out = Path(args.out)
    path = out / f"paper_scale_{device.type}.json"
    if path.exists() and args.only:  # keep the parts measured earlier
        old = json.loads(path.read_text())
        result = {**{k: v for k, v in old.items() if k in ("stage1", "stage2", "clustering")}, **result}
    if "stage1" in parts:
        s1 = replace(
            cfg.stage1, device=str(device), epochs=1, iters_per_epoch=args.steps, instance_epochs=1, eval_batch_size=64
        )
        recs, imgs = fake_set(s1.batch_size // 4, 4, tuple(s1.image_size))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        r1 = run_cmam(s1, recs, imgs, progress=False)
        result["stage1"] = {
            "arch": s1.arch,
            "image_size": list(s1.image_size),
            "batch_size": s1.batch_size,
            "amp": s1.amp,
            "train_images_per_second": r1.images_per_second,
            "seconds": time.time() - t0,
            **peak_memory(device),
        }
        print(
            f"stage 1: {r1.images_per_second:.1f} images/s (3 passes each), batch {s1.batch_size}, "
            f"{s1.arch} {s1.image_size[0]}x{s1.image_size[1]}, amp={s1.amp}"
        )

    if "stage2" in parts:
        # k1 / k2 below the 8 images an identity has per modality here (the preset's k1=30
        # assumes SYSU-sized clusters); clustering is timed separately below
        s2 = replace(
            cfg.stage2,
            device=str(device),
            epochs=1,
            kmeans_epochs=0,  # one DBSCAN epoch timed; not the presets' k-means phase
            iters_per_epoch=args.steps,
            eval_batch_size=64,
            eps=0.6,
            k1=6,
            k2=3,
        )
        if args.stage2_batch:
            s2 = replace(s2, batch_size=args.stage2_batch)
        recs, imgs = fake_set(
            2 * (s2.batch_size // s2.num_instances), max(16, s2.num_instances), tuple(s2.image_size), seed=1
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        r2 = run_selftrain(s2, recs, imgs, progress=False)
        result["stage2"] = {
            "arch": s2.arch,
            "image_size": list(s2.image_size),
            "batch_size": s2.batch_size,
            "amp": s2.amp,
            "train_images_per_second": r2.images_per_second,
            "seconds": time.time() - t0,
            **peak_memory(device),
        }
        print(f"stage 2: {r2.images_per_second:.1f} images/s (2 passes each), batch {s2.batch_size}")

    if "clustering" in parts:
        s2 = cfg.stage2
        rows = {}
        for modality, n in (("visible", 22258), ("infrared", 11909)):
            x = make_features(n, 2048, seed=0 if modality == "visible" else 1)
            t0 = time.time()
            labels = pseudo_labels(x, s2.k1, s2.k2, s2.eps, s2.min_samples, knn_backend=args.knn)
            secs = time.time() - t0
            rows[modality] = {
                "n": n,
                "seconds": secs,
                "clusters": int(labels.max()) + 1,
                "noise_fraction": float(np.mean(labels < 0)),
            }
            print(f"Jaccard + DBSCAN, {modality} {n} x 2048: {secs:.1f} s, {rows[modality]['clusters']} clusters")
        result["clustering"] = {
            "k1": s2.k1,
            "k2": s2.k2,
            "eps": s2.eps,
            "knn_backend": args.knn,
            **rows,
            "total_seconds": sum(r["seconds"] for r in rows.values()),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
