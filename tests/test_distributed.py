"""Multi-process training on CPU with the gloo backend (2 processes).

* the helpers of :mod:`cmamlib.distributed` without a process group (identity / shards);
* one DDP training step of each stage equals the single-process step on the same global
  batch (gradients, BN running statistics, cluster memories), with SyncBatchNorm;
* ``torchrun --nproc_per_node 2 -m cmamlib train`` (smoke preset, tiny data, both stages,
  ``sync_bn=true``): the run finishes, both ranks hold identical weights after every
  epoch (state-dict hashes gathered into ``log.jsonl``), only rank 0 writes, and each
  stage's first epoch matches a single-process run of the same global batch (later
  epochs are not compared: see :func:`test_torchrun_two_processes_match_one`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmamlib import distributed as dist
from cmamlib.training.loop import gray_transform
from cmamlib.utils import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- no process group


def test_helpers_are_identity_in_one_process():
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    x = torch.randn(6, 3)
    assert dist.all_gather_tensor(x) is x and dist.gather_with_grad(x) is x and dist.shard_batch(x) is x
    assert dist.all_reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert dist.broadcast_object({"k": 1}) == {"k": 1} and dist.all_gather_object(3) == [3]
    assert dist.run_on_main(lambda: 7) == 7
    dist.check_batch_split(16, 4)  # any P in one process
    dist.barrier()
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    assert dist.wrap_ddp(m, torch.device("cpu")) is m
    assert isinstance(dist.convert_sync_batchnorm(m, torch.device("cpu"))[1], torch.nn.BatchNorm2d)
    assert dist.state_hash({"m": m}) == dist.state_hash({"m": m})


def test_shards_cover_the_batch_and_the_images():
    b = list(range(16))
    parts = [dist.shard_batch(b, r, 4) for r in range(4)]
    assert sum(parts, []) == b and all(len(p) == 4 for p in parts)
    with pytest.raises(ValueError, match="does not split"):
        dist.shard_batch(list(range(10)), 0, 4)
    for n, bs, w in [(100, 64, 2), (1000, 64, 3), (10, 64, 2), (640, 64, 4), (0, 8, 2)]:
        spans = [dist.extraction_shard(n, bs, r, w) for r in range(w)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(lo % bs == 0 for lo, _ in spans)  # whole inference batches: the single-process batches


def test_gray_view_of_a_shard_equals_the_full_pass():
    """A shard's gray view (generator advanced past the rows before it) is the one the
    whole set gets in one pass, so sharded feature extraction changes no feature."""
    x = torch.rand(300, 3, 8, 4)
    full_tf = gray_transform("random_channel", seed=5)
    full = torch.cat([full_tf(x[s : s + 64]) for s in range(0, 300, 64)])
    lo, hi = dist.extraction_shard(300, 64, 1, 2)
    tf = gray_transform("random_channel", seed=5, skip=lo)
    part = torch.cat([tf(x[s : s + 64]) for s in range(lo, hi, 64)])
    assert torch.equal(part, full[lo:hi])


# ----------------------------------------------------------------------------- one step, 2 processes


def _step_setup(stage: int):
    """Models (seeded), a global batch, memories: the same on every process."""
    from cmamlib.data.transforms import gray_of_normalised
    from cmamlib.memory import ClusterMemory
    from cmamlib.models import build_model
    from cmamlib.training.cmam import CMAMConfig
    from cmamlib.training.selftrain import SelfTrainConfig

    torch.manual_seed(0)
    a, b = build_model("resnet18", width=8), build_model("resnet18", width=8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 32, 16, generator=g)
    xg = gray_of_normalised(x, "random_channel", g)
    y = torch.arange(4).repeat_interleave(4)  # P=4 ids x K=4
    mems = []
    for _ in range(2):
        m = ClusterMemory(a.feat_dim, 4, 0.05, 0.2, "mean")
        m.reset(torch.nn.functional.normalize(torch.randn(16, a.feat_dim, generator=g), dim=1), y)
        mems.append(m)
    if stage == 1:
        cfg = CMAMConfig(identity_loss="memory", triplet_weight=1.0, symmetric=True, tie_rgb_to_gray=True, device="cpu")
    else:
        cfg = SelfTrainConfig(device="cpu")
    return cfg, a, b, x, xg, y, mems


def _one_step(stage: int, distributed: bool) -> dict:
    """Loss, gradients, BN buffers and memories after one step (this rank's view)."""
    from cmamlib.losses import (
        CrossEntropyLabelSmooth,
        DistanceMatrixLoss,
        SimilarityMatrixLoss,
        SymmetricKL,
        TripletLoss,
    )
    from cmamlib.training import cmam, selftrain

    cfg, a, b, x, xg, y, (ma, mb) = _step_setup(stage)
    dev = torch.device("cpu")
    if distributed:
        for m in (a, b):
            dist.convert_sync_batchnorm(m, dev)
        x, xg, y_local = dist.shard_batch(x), dist.shard_batch(xg), dist.shard_batch(y)
    else:
        y_local = y
    ta, tb = dist.wrap_ddp(a, dev), dist.wrap_ddp(b, dev)
    if stage == 1:
        terms = cmam.step_losses(
            cfg,
            x,
            xg,
            y_local,
            y_local,
            ta,
            tb,
            (ma, mb),
            None,
            None,
            SymmetricKL(reduction="sum"),  # the code's summed KL: the world-size scale under DDP
            SimilarityMatrixLoss("sum"),
            TripletLoss(),
            CrossEntropyLabelSmooth(0.1),
            True,
            dev,
        )
        loss = sum(v for k, v in terms.items() if not k.startswith("_"))
        loss.backward()
        cmam.update_memories(ma, mb, terms)
        logged = {k: float(v.detach()) for k, v in terms.items() if not k.startswith("_")}
    else:
        terms, upd = selftrain._step_losses(
            cfg, x, xg, y_local, ta, tb, ma, mb, None, None, SymmetricKL(), DistanceMatrixLoss(), dev
        )
        loss = sum(terms.values())
        loss.backward()
        ma.update(upd[0], y)
        mb.update(upd[1], y)
        logged = {k: float(v.detach()) for k, v in terms.items()}
    return {
        "loss": dist.all_reduce_mean(logged),
        "grads": {
            f"{n}.{k}": p.grad.clone()
            for n, m in (("a", a), ("b", b))
            for k, p in m.named_parameters()
            if p.grad is not None
        },
        "buffers": {
            f"{n}.{k}": v.clone() for n, m in (("a", a), ("b", b)) for k, v in m.state_dict().items() if "running" in k
        },
        "memories": [ma.features.clone(), mb.features.clone()],
    }


def _step_worker(rank: int, world: int, port: int, stage: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    assert dist.init_from_env("cpu")
    try:
        res = _one_step(stage, distributed=True)
        hashes = dist.all_gather_object(
            dist.state_hash({"g": torch.nn.ParameterList([torch.nn.Parameter(t) for t in res["grads"].values()])})
        )
        if rank == 0:
            torch.save({**res, "grad_hashes": hashes}, out)
        torch.distributed.barrier()  # both ranks leave together
    finally:
        dist.cleanup()
    # Leave without the interpreter's finalisation. About 1 in 35 spawned workers (3 of 100
    # runs of this test here, rank 1 each time) aborted after returning, with "terminate
    # called without an active exception" while no Python frame was left on its stack: a
    # C++ destructor at exit, after the result file was written and the group destroyed.
    # With os._exit: 0 of 100 runs (2026-11-29).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_step_equals_single_process_step(stage, tmp_path):
    """2 ranks x 8 images with SyncBatchNorm give the gradients, BN statistics and memory
    updates of one process on the 16 images: the gathered in-batch terms (SIM, triplet,
    distance matrices) and the global memory updates are what make this hold."""
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    ref = _one_step(stage, distributed=False)
    out = tmp_path / "rank0.pt"
    mp.spawn(_step_worker, args=(2, _free_port(), stage, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert got["grad_hashes"][0] == got["grad_hashes"][1]  # DDP: the same averaged gradient on both ranks
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)
    assert ref["grads"].keys() == got["grads"].keys()
    for k, g in ref["grads"].items():
        scale = float(g.abs().max()) + 1e-8
        err = float((got["grads"][k] - g).abs().max())
        assert err <= 2e-4 * scale + 1e-7, f"{k}: max |grad diff| {err:.3g} vs max |grad| {scale:.3g}"
    for k, v in ref["buffers"].items():
        torch.testing.assert_close(got["buffers"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for m_ref, m_got in zip(ref["memories"], got["memories"]):
        torch.testing.assert_close(m_got, m_ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- torchrun, the CLI, both stages


def _cli(args: list[str], *, torchrun: int = 0, timeout: int = 600, threads: int = 1) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(torchrun),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "cmamlib",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "cmamlib", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _pipeline(
    tiny_data: Path,
    out: Path,
    nproc: int,
    sync_bn: bool,
    threads: int = 1,
    extra: tuple = (),
    stage2_from: Path | None = None,
) -> dict:
    """train stage1 -> train stage2 (init_from) -> evaluate, with `nproc` processes
    (0: plain ``python -m cmamlib``). ``stage2_from``: start stage 2 from that stage-1
    run folder instead of this pipeline's own."""
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress"]
    flags = [f"stage1.sync_bn={sync_bn}", f"stage2.sync_bn={sync_bn}", *extra]
    _cli(["train", "stage1", *common, "--out", str(out / "s1"), *flags], torchrun=nproc, threads=threads)
    init = stage2_from if stage2_from is not None else out / "s1"
    _cli(
        ["train", "stage2", *common, "--out", str(out / "s2"), f"init_from={init}", *flags],
        torchrun=nproc,
        threads=threads,
    )
    _cli(
        [
            "evaluate",
            "--dataset",
            "sysu-mm01",
            "--root",
            str(tiny_data / "SYSU-MM01-synth"),
            "--checkpoint",
            str(out / "s2"),
            "--reports",
            str(out / "reports"),
            "--name",
            "eval",
            "--no-progress",
        ]
    )
    logs = {s: [json.loads(ln) for ln in (out / s / "log.jsonl").read_text().splitlines()] for s in ("s1", "s2")}
    metrics = json.loads((out / "reports" / "eval" / "metrics.json").read_text())
    weights = load_checkpoint(out / "s2" / "checkpoint.pt")
    return {"logs": logs, "summary": metrics["summary"], "weights": weights}


#: The comparison runs the smoke preset at stage 1's paper learning rate in both stages:
#: at the smoke default (3.5e-3 from random init) the tiny pipeline is chaotic, a relative
#: 1e-6 perturbation of the initial weights alone moves SYSU all-search R1 by up to 20
#: points, so no tolerance would say anything (benchmarks/bench_ddp_equivalence.py).
EQUIV = ("stage1.lr=3.5e-4", "stage2.lr=3.5e-4")

#: The weight-level comparison below also draws stage 1's F_g independently of F_rg.
#: With the default shared start (F_g a copy of F_rg) the same comparison, measured:
#: identical rank hashes and pseudo labels in both stages, metrics equal to 0.01 points,
#: but final stage-2 weights apart by up to 1.7e-3 (BN running statistics; parameters
#: 9.7e-4) instead of 1e-5: the two networks being copies, float-reordering noise in
#: near-zero gradients becomes Adam steps of the size of the learning rate. The resume
#: test after it runs the default under torchrun.
WEIGHT_EQUIV = (*EQUIV, "stage1.shared_init=false")


#: Largest relative difference of an epoch-0 loss term between one process and 2 ranks
#: (SyncBN) that the comparison below accepts. Measured on the tiny benchmark: at most
#: 1e-6 with AVX-512 kernels, 8.6e-4 with AVX2 kernels (ATEN_CPU_CAPABILITY=avx2,
#: ONEDNN_MAX_CPU_ISA=AVX2); without SyncBN (the bug this catches) 5-13% in stage 1 and
#: 1-12% in stage 2.
EPOCH0_REL = 1e-2


def _label_stats(row: dict) -> dict:
    """The pseudo-label statistics of a log row (cluster counts, noise, ARI, pairs...):
    no losses, times, throughput or rank fields."""
    skip = ("loss_", "eval_", "rank_state_hashes", "world_size", "lr_end")
    return {k: v for k, v in row.items() if not k.startswith(skip) and "second" not in k}  # times, throughput


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_data, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo, ``sync_bn=true``) against one process with
    the same global batch, through the command line: stage 1 -> stage 2 -> evaluate.

    What is asserted is what holds whatever the CPU's kernels: one log, written by rank 0;
    identical weights on both ranks after every epoch (state hashes); the first
    clustering of each stage identical (stage 1 from the same seeded networks, stage 2 of
    both runs from the one-process stage-1 run); every epoch-0 loss term within
    :data:`EPOCH0_REL`; a checkpoint that evaluates. The step-level equality (gradients,
    BN statistics, memories within 2e-4) is :func:`test_ddp_step_equals_single_process_step`.

    Not asserted: later epochs. The two runs differ by float reordering (per-rank
    reductions then an all-reduce, against one reduction), and the training amplifies it:
    Adam's first update is ``lr * g / (|g| + eps)``, about ``lr`` for every element whatever
    its size, so an element whose gradient is at rounding level (measured: 2.8e-7 in one
    run, -4.5e-8 in the other, model B ``layer4.0.conv1``) moves ``2 lr`` apart; after one
    epoch the fused features differ by 5e-3, the k-reciprocal neighbour sets of a few
    samples change, and the next clustering can split a cluster (22 vs 23 visible
    clusters, stage-2 epoch-1 memory loss 4.742 vs 4.506). A single process started from
    weights 1e-6 apart (the 2-rank stage-1 output) gives the same 4.506: the divergence is
    the training's sensitivity, not the distributed code. Which side of the split a run
    lands on depends on the CPU's kernels (AVX-512 here: no split; AVX2: split), so an
    assertion on later epochs or final metrics would pass or fail by machine
    (investigations/ddp_divergence.md).
    """
    one = _pipeline(tiny_data, tmp_path / "one", 0, sync_bn=True, extra=WEIGHT_EQUIV)
    two = _pipeline(
        tiny_data, tmp_path / "two", 2, sync_bn=True, extra=WEIGHT_EQUIV, stage2_from=tmp_path / "one" / "s1"
    )
    for s in ("s1", "s2"):
        rows, ref = two["logs"][s], one["logs"][s]
        assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref] == [0, 1]  # one log, written by rank 0 only
        for r in rows:
            assert r["world_size"] == 2 and len(r["rank_state_hashes"]) == 2
            assert r["rank_state_hashes"][0] == r["rank_state_hashes"][1], f"{s} epoch {r['epoch']}: ranks diverged"
        assert all("rank_state_hashes" not in r for r in ref)
        assert _label_stats(rows[0]) == _label_stats(ref[0]), f"{s}: the first clustering differs"
        losses = {k: v for k, v in ref[0].items() if k.startswith("loss_")}
        assert losses and losses.keys() == {k for k in rows[0] if k.startswith("loss_")}
        for k, v in losses.items():
            assert rows[0][k] == pytest.approx(v, rel=EPOCH0_REL), f"{s} epoch 0 {k}"
    for res in (one, two):
        assert set(res["weights"]) >= {"model_a", "model_b", "labels"}
        assert all(0.0 <= v <= 1.0 for k, v in res["summary"].items() if k.endswith(("R1", "mAP")))


@pytest.mark.slow
def test_torchrun_resumes_a_run_started_in_one_process(tiny_data, tmp_path):
    """A stage-1 run killed after epoch 0 in one process is finished by
    ``torchrun --nproc_per_node 2`` with the same command (rank 0 reads the checkpoint and
    broadcasts it): the log continues at epoch 1 and the weights match the
    uninterrupted single-process run (the global batch does not depend on the number of
    processes). The source pseudo labels are made first where ``train stage1`` makes
    them (``out/source_labels.csv``), so the torchrun command reuses them."""
    from dataclasses import replace

    from cmamlib.data.loading import load_images
    from cmamlib.presets import load_config, save_config
    from cmamlib.runs import SOURCE_LABELS_FILE, make_source_labels, read_records
    from cmamlib.training.cmam import run_cmam
    from cmamlib.training.loop import StopTraining

    flags = [*EQUIV, "stage1.sync_bn=true"]
    cfg = load_config("smoke", flags)
    records = read_records("market-1501", tiny_data / "Market-1501-synth", ["train"])
    images = load_images(records, cfg.stage1.image_size, progress=False)
    out = tmp_path / "s1"
    labels = make_source_labels(cfg, out / SOURCE_LABELS_FILE, tiny_data, progress=False).path
    cfg = replace(cfg, stage1=replace(cfg.stage1, label_file=str(labels)))
    save_config(cfg, out / "config.yaml", {"stage": "stage1"})

    def kill(epoch, row):
        raise StopTraining

    torch.set_num_threads(1)
    with pytest.raises(StopTraining):
        run_cmam(cfg.stage1, records, images, run_dir=out, progress=False, on_epoch_end=kill)
    full = run_cmam(cfg.stage1, records, images, progress=False)
    _cli(
        [
            "train",
            "stage1",
            "--config",
            "smoke",
            "--data-root",
            str(tiny_data),
            "--no-progress",
            "--out",
            str(out),
            *flags,
        ],
        torchrun=2,
    )
    rows = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert "rank_state_hashes" not in rows[0] and rows[1]["world_size"] == 2
    assert rows[1]["rank_state_hashes"][0] == rows[1]["rank_state_hashes"][1]
    state = load_checkpoint(out / "checkpoint.pt")
    np.testing.assert_array_equal(state["labels"], full.labels)
    ref = full.model_rg.state_dict()
    worst = max(float((state["model_rg"][k].double() - v.double()).abs().max()) for k, v in ref.items())
    assert worst <= 1e-3, worst


@pytest.mark.slow
def test_torchrun_stage1_with_two_forwards_per_view(tiny_data, tmp_path):
    """``stage1.view_forward=separate`` calls the DDP-wrapped F_rg twice per step (RGB, then
    gray, as the authors' code): under ``torchrun --nproc_per_node 2`` it trains and the
    ranks stay identical."""
    out = tmp_path / "s1"
    _cli(
        [
            "train",
            "stage1",
            "--config",
            "smoke",
            "--data-root",
            str(tiny_data),
            "--no-progress",
            "--out",
            str(out),
            "stage1.view_forward=separate",
        ],
        torchrun=2,
    )
    rows = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["world_size"] == 2
    for r in rows:
        assert len(set(r["rank_state_hashes"])) == 1
        assert np.isfinite(r["loss_ce_rg_gray"]) and np.isfinite(r["loss_tri_rg_gray"])
