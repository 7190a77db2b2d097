"""One prepared check of the real-scale path on a CUDA machine (``make gpu-check``).

What it runs, each part timed and written to ``reports/bench/gpu_check.json`` (plus a
short ``gpu_check.txt`` summary):

* **Stages 1 and 2 of the paper preset** (``paper-sysu-mm01``: ResNet-50, 384x128,
  batches 64 and 128) for a fixed number of steps, with AMP in float16 and in bfloat16,
  ``channels_last`` off and on: training images/s (what :func:`run_cmam` /
  :func:`run_selftrain` report, training steps only), peak GPU memory, the loss of each
  epoch (finite; falling from the first epoch to the last). Training images are the
  colour-block identities of ``bench_paper_scale.fake_set`` at the preset's input size.
* **The ceiling**: the same model's plain training step (forward, backward, Adam) on
  random tensors of the same batch, dtype and memory format. A stage passes each image
  through a network 3 times (stage 1: F_rg on RGB and gray, F_g on gray) or 2 times
  (stage 2: A and B), so its ceiling is the plain step's images/s divided by that; the
  JSON gives each stage's ``fraction_of_ceiling`` (goal: >= 0.8).
* **Clustering**: Jaccard (k1 30, k2 6) + DBSCAN (eps 0.4) on 22,258 x 2,048 re-ID-like
  features (SYSU-MM01's training size), features on the device, with the torch kNN and,
  when it is installed, faiss (goal: under 10 s).
* **The command line under torchrun**: one process, the nccl backend (gloo on a CPU),
  ``train stage1`` stopped after its first epoch (``--stop-after-epoch 0``) and resumed by
  the same command, then ``train stage2`` from it, on the synthetic benchmark (``small``:
  90 training identities, enough for batches of 8 ids x 16) rewritten at the preset's
  input size (384x128; the generator renders about 128x64).
* **Evaluation** of that stage-2 run with the SYSU-MM01 protocol (10 trials).

``SMOKE=1`` (or ``--smoke``) runs the same parts at toy scale on the CPU in under two
minutes (the ``smoke`` preset, 2,000 x 128 features, the tiny benchmark); the test suite
runs it so.

    make gpu-check            # on a CUDA machine; sized for 8 minutes on one H200 (not yet run on one)
    make gpu-check SMOKE=1    # anywhere
    python benchmarks/gpu_check.py [--smoke] [--steps 20] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_jaccard_sparse import make_features  # noqa: E402
from bench_paper_scale import fake_set, peak_memory  # noqa: E402

from cmamlib.clustering import pseudo_labels  # noqa: E402
from cmamlib.data.label_files import write_label_file  # noqa: E402
from cmamlib.models import build_model  # noqa: E402
from cmamlib.presets import load_config  # noqa: E402
from cmamlib.training.cmam import run_cmam  # noqa: E402
from cmamlib.training.common import autocast, make_scaler, to_memory_format  # noqa: E402
from cmamlib.training.selftrain import run_selftrain  # noqa: E402
from cmamlib.utils import resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _losses(history: list[dict]) -> dict:
    """Per-epoch sum of the loss terms, finiteness and whether it fell."""
    per_epoch = [sum(v for k, v in r.items() if k.startswith("loss_") and k != "loss_total") for r in history]
    return {
        "loss_per_epoch": per_epoch,
        "losses_finite": all(math.isfinite(v) for v in per_epoch),
        "loss_falling": len(per_epoch) > 1 and per_epoch[-1] < per_epoch[0],
    }


def ceiling(stage_cfg, device: torch.device, steps: int, batch: int) -> float:
    """Images/s of the plain training step (forward, backward, Adam) of ``stage_cfg``'s
    model on random ``(batch, 3, H, W)`` tensors, with its AMP dtype and memory format."""
    model = build_model(stage_cfg.arch, width=stage_cfg.width, last_stride=stage_cfg.last_stride).to(device).train()
    model = to_memory_format(model, stage_cfg.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = make_scaler(device, stage_cfg.amp, stage_cfg.amp_dtype)
    h, w = stage_cfg.image_size
    x = to_memory_format(torch.randn(batch, 3, h, w, device=device), stage_cfg.channels_last)

    def step() -> None:
        with autocast(device, stage_cfg.amp, stage_cfg.amp_dtype):
            out = model(x)
            loss = out.feat.float().pow(2).mean() + out.bn_feat.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def stage_runs(cfg, device: torch.device, steps: int, smoke: bool, workdir: Path) -> list[dict]:
    """Stage 1 and stage 2 for every AMP dtype x channels_last, with their ceilings;
    ``workdir``: a scratch folder (classifier mode's label files)."""
    rows = []
    combos = [("float16", False), ("float16", True), ("bfloat16", False), ("bfloat16", True)]
    if device.type == "cpu":  # CPU autocast is bfloat16 whatever amp_dtype says: two combinations say it all
        combos = [("bfloat16", False), ("bfloat16", True)]
    for dtype, cl in combos:
        common = dict(device=str(device), amp=True, amp_dtype=dtype, channels_last=cl, epochs=2, eval_batch_size=64)
        # clustering at the scale of the toy identities (timed at SYSU-MM01 size below)
        toy = dict(k1=6, k2=3, eps=0.6, min_samples=2)
        s1 = replace(cfg.stage1, **common, **toy, iters_per_epoch=steps, instance_epochs=0, kl_start_fraction=0.5)
        # the DBSCAN phase only (the paper presets' k-means phase would add its epochs)
        s2 = replace(cfg.stage2, **common, **toy, iters_per_epoch=steps, kmeans_epochs=0)
        for stage, sc, passes in (("stage1", s1, 3), ("stage2", s2, 2)):
            p = sc.batch_size // sc.num_instances
            # stage 1 keeps the visible half: still num_instances images per identity
            recs, imgs = fake_set(2 * p, max(16, 2 * sc.num_instances), tuple(sc.image_size), seed=len(rows))
            if stage == "stage1":  # source: visible only
                keep = [i for i, r in enumerate(recs) if r.modality == "visible"]
                recs, imgs = [recs[i] for i in keep], imgs[keep]
                if sc.identity_loss == "classifier" and sc.label_file is None:
                    # the fixed source pseudo labels of classifier mode (the code's PPLR file):
                    # here the toy identities, the step's cost does not depend on them
                    path = workdir / f"labels_{len(rows)}.csv"
                    sc = replace(sc, label_file=str(write_label_file(path, recs, [r.pid for r in recs])))
            _reset_peak(device)
            t0 = time.time()
            try:
                res = (
                    run_cmam(sc, recs, imgs, progress=False)
                    if stage == "stage1"
                    else run_selftrain(sc, recs, imgs, progress=False)
                )
            except Exception as e:  # a part that fails is reported, the others still run
                rows.append(
                    {"stage": stage, "amp_dtype": dtype, "channels_last": cl, "error": f"{type(e).__name__}: {e}"}
                )
                print(f"{stage} {dtype} channels_last={cl}: FAILED {e}", flush=True)
                continue
            row = {
                "stage": stage,
                "amp_dtype": dtype,
                "channels_last": cl,
                "arch": sc.arch,
                "image_size": list(sc.image_size),
                "batch_size": sc.batch_size,
                "steps_per_epoch": steps,
                "passes_per_image": passes,
                "train_images_per_second": res.images_per_second,
                "seconds": time.time() - t0,
                **peak_memory(device),
                **_losses(res.history),
            }
            ceil = ceiling(sc, device, max(3, steps // 2), sc.batch_size)
            row["ceiling_step_images_per_second"] = ceil
            row["ceiling_images_per_second"] = ceil / passes
            row["fraction_of_ceiling"] = res.images_per_second / (ceil / passes)
            rows.append(row)
            print(
                f"{stage} {dtype:8s} channels_last={cl!s:5s}: {res.images_per_second:8.1f} images/s, "
                f"{row['fraction_of_ceiling']:.0%} of the ceiling ({ceil / passes:.1f}), losses "
                f"{[round(v, 3) for v in row['loss_per_epoch']]}",
                flush=True,
            )
    return rows


def clustering(device: torch.device, n: int, dim: int) -> list[dict]:
    """Jaccard + DBSCAN (the paper preset's stage-2 values) with each available kNN backend."""
    rows = []
    x = make_features(n, dim, seed=0)
    backends = ["torch"]
    try:
        import faiss  # type: ignore  # noqa: F401

        backends.append("faiss")
    except ImportError:
        pass
    for backend in backends:
        feats = torch.as_tensor(x).to(device) if backend == "torch" else x
        _sync(device)
        t0 = time.time()
        labels = pseudo_labels(feats, 30, 6, 0.4, 4, knn_backend=backend)
        _sync(device)
        secs = time.time() - t0
        rows.append(
            {
                "knn_backend": backend,
                "features_device": str(device) if backend == "torch" else "cpu",
                "n": n,
                "dim": dim,
                "seconds": secs,
                "clusters": int(labels.max()) + 1,
                "noise_fraction": float(np.mean(labels < 0)),
            }
        )
        print(f"Jaccard + DBSCAN {n} x {dim} ({backend}): {secs:.1f} s, {rows[-1]['clusters']} clusters", flush=True)
    if "faiss" not in backends:
        rows.append({"knn_backend": "faiss", "skipped": "faiss is not installed (pip install faiss-gpu or faiss-cpu)"})
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, timeout: int) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    out = {"command": " ".join(cmd[2:]), "returncode": proc.returncode, "seconds": time.time() - t0}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def write_at_size(root: Path, size: tuple[int, int]) -> int:
    """Rewrite every image under ``root`` at ``size`` = (H, W) (bilinear, same format):
    the synthetic benchmark renders at about 128x64; a real-scale check decodes images of
    the real size. Returns the number of images."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    files = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".png")]

    def one(p: Path) -> None:
        with Image.open(p) as im:
            big = im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        big.save(p, quality=92) if p.suffix.lower() in (".jpg", ".jpeg") else big.save(p)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as ex:
        list(ex.map(one, files))
    return len(files)


def command_line(work: Path, smoke: bool, device: torch.device, steps: int, size: tuple[int, int], preset: str) -> dict:
    """``train stage1`` under torchrun (1 process), stopped after epoch 0 and resumed,
    ``train stage2`` from it, and ``evaluate`` of the stage-2 run (SYSU-MM01), on the
    synthetic benchmark written at the preset's input ``size`` (SMOKE: as rendered)."""
    from cmamlib.data.synth import generate

    data = work / "data"
    t0 = time.time()
    generate(data, "tiny" if smoke else "small", seed=0, progress=False, datasets=("sysu", "market"))
    written = None if smoke else write_at_size(data, size)
    gen_seconds = time.time() - t0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4"),
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "cmamlib"]
    if smoke:
        flags = ["--config", "smoke"]
    else:
        flags = ["--config", preset, "require_pretrained=false", "data.synthetic=true"]
        flags += [f"stage1.iters_per_epoch={steps}", f"stage2.iters_per_epoch={steps}"]
        flags += ["stage1.epochs=2", "stage2.epochs=2", "stage2.kmeans_epochs=0"]
        flags += ["stage2.k1=6", "stage2.k2=3", "stage2.eps=0.6"]
        flags += ["stage1.k1=6", "stage1.k2=3", "stage2.min_samples=2", "stage1.min_samples=2"]
    flags += [f"stage1.device={device.type}", f"stage2.device={device.type}"]
    common = [*flags, "--data-root", str(data), "--no-progress"]
    s1, s2 = work / "runs" / "s1", work / "runs" / "s2"
    steps_run = {
        "stage1_stopped": _run(
            [*torchrun, "train", "stage1", *common, "--out", str(s1), "--stop-after-epoch", "0"], env, 900
        ),
    }
    rows_after_stop = len((s1 / "log.jsonl").read_text().splitlines()) if (s1 / "log.jsonl").exists() else 0
    steps_run["stage1_resumed"] = _run([*torchrun, "train", "stage1", *common, "--out", str(s1)], env, 900)
    steps_run["stage2"] = _run([*torchrun, "train", "stage2", *common, "--out", str(s2), f"init_from={s1}"], env, 900)
    ev = [
        sys.executable,
        "-m",
        "cmamlib",
        "evaluate",
        "--dataset",
        "sysu-mm01",
        "--root",
        str(data / "SYSU-MM01-synth"),
    ]
    ev += ["--checkpoint", str(s2), "--reports", str(work / "reports"), "--name", "eval", "--no-progress"]
    steps_run["evaluate"] = _run(ev, env, 900)
    log1 = [json.loads(ln) for ln in (s1 / "log.jsonl").read_text().splitlines()] if (s1 / "log.jsonl").exists() else []
    metrics_path = work / "reports" / "eval" / "metrics.json"
    summary = json.loads(metrics_path.read_text())["summary"] if metrics_path.exists() else {}
    backend = "nccl" if device.type == "cuda" else "gloo"
    return {
        "backend": backend,
        "benchmark_seconds": gen_seconds,
        "benchmark_image_size": None if smoke else list(size),
        "benchmark_images": written,
        **steps_run,
        "stage1_epochs_after_stop": rows_after_stop,
        "stage1_epochs_after_resume": [r["epoch"] for r in log1],
        "resumed": rows_after_stop == 1 and [r["epoch"] for r in log1] == [0, 1],
        "sysu_summary": summary,
        "ok": all(v.get("returncode") == 0 for v in steps_run.values()) and bool(summary),
    }


def summary_text(result: dict) -> str:
    lines = [f"gpu-check on {result['device_name']} ({'SMOKE' if result['smoke'] else result['preset']})"]
    for r in result["stages"]:
        if "error" in r:
            lines.append(f"  {r['stage']} {r['amp_dtype']} channels_last={r['channels_last']}: FAILED {r['error']}")
            continue
        mem = r.get("peak_gpu_memory_gib", r.get("peak_rss_gib"))
        lines.append(
            f"  {r['stage']} {r['amp_dtype']:8s} channels_last={r['channels_last']!s:5s} "
            f"{r['train_images_per_second']:8.1f} img/s = {r['fraction_of_ceiling']:4.0%} of ceiling, "
            f"peak {mem:.1f} GiB, losses finite {r['losses_finite']}, falling {r['loss_falling']}"
        )
    for r in result["clustering"]:
        if "skipped" in r:
            lines.append(f"  clustering ({r['knn_backend']}): skipped, {r['skipped']}")
        else:
            lines.append(f"  clustering {r['n']} x {r['dim']} ({r['knn_backend']}): {r['seconds']:.1f} s")
    c = result["command_line"]
    r1, m_ap = (c["sysu_summary"].get(k, float("nan")) for k in ("all_R1", "all_mAP"))
    lines.append(
        f"  torchrun ({c['backend']}): stage 1 stopped + resumed {c['resumed']}, stage 2, evaluate: ok {c['ok']}; "
        f"SYSU all R1 {r1:.3f} mAP {m_ap:.3f}"
    )
    lines.append(f"  total {result['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("SMOKE", "") not in ("", "0"))
    ap.add_argument("--preset", default="paper-sysu-mm01")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="training steps per epoch (default 20; SMOKE 2)")
    ap.add_argument("--out", default=str(REPO / "reports" / "bench"))
    args = ap.parse_args(argv)
    smoke = args.smoke
    device = torch.device("cpu") if smoke else resolve_device(args.device)
    steps = args.steps or (2 if smoke else 20)
    cfg = load_config("smoke" if smoke else args.preset, ["require_pretrained=false"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    t0 = time.time()
    result: dict = {
        "smoke": smoke,
        "preset": "smoke" if smoke else args.preset,
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
    }
    print(f"gpu-check: {result['preset']} on {name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["stages"] = stage_runs(cfg, device, steps, smoke, Path(tmp))
        result["clustering"] = clustering(device, 2000 if smoke else 22258, 128 if smoke else 2048)
        size = tuple(cfg.stage2.image_size)
        result["command_line"] = command_line(Path(tmp), smoke, device, steps, size, result["preset"])
    result["seconds"] = time.time() - t0
    stages_ok = [r for r in result["stages"] if "error" not in r]
    result["goals"] = {
        "stages_at_80_percent_of_ceiling": bool(stages_ok) and all(r["fraction_of_ceiling"] >= 0.8 for r in stages_ok),
        "clustering_under_10_s": all(r.get("seconds", 0.0) < 10 for r in result["clustering"] if "seconds" in r),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_smoke" if smoke else "gpu_check"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    text = summary_text(result)
    (out / f"{name}.txt").write_text(text + "\n")
    print(text)
    print("wrote", out / f"{name}.json")
    ok = (
        len(stages_ok) == len(result["stages"])
        and all(r["losses_finite"] for r in stages_ok)
        and result["command_line"]["ok"]
        and result["command_line"]["resumed"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
