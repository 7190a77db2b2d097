"""Cross-modality cluster matching and the cluster memory vs their plain-loop oracles.

Sizes of a SYSU-MM01 stage-2 epoch: 500 visible x 450 infrared clusters of 512-d
features; a memory step of batch 128 (8 ids x 16) over 500 clusters. Both the oracles
(``tests/test_labeling.py``: loop costs + textbook Hungarian; ``tests/test_memory.py``:
one dot product at a time + the loop of cluster-contrast's ``CM.backward``) and the
library are timed in this run, on the same data, and their outputs are checked equal.
The memory is also compared with cluster-contrast's own arrangement (vectorised logits,
per-sample Python loop for the update).

    python benchmarks/bench_matching.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_labeling import match_oracle  # noqa: E402
from test_memory import oracle_logits, oracle_loss, oracle_update_mean  # noqa: E402

from cmamlib.labeling import match_clusters  # noqa: E402
from cmamlib.memory import ClusterMemory  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def centroids(rng: np.random.Generator, nv: int = 500, ni: int = 450, d: int = 512):
    ids = rng.normal(size=(max(nv, ni), d))
    vis = ids[rng.permutation(len(ids))[:nv]] + 0.8 * rng.normal(size=(nv, d))
    ir = ids[rng.permutation(len(ids))[:ni]] + 0.8 * rng.normal(size=(ni, d))
    return vis, ir


def bench_match(repeat: int) -> bool:
    vis, ir = centroids(np.random.default_rng(0))
    ok = True
    for unequal in ("ward_merge", "second_round"):
        t_ref, (ref_pairs, ref_cost) = _best(lambda: match_oracle(vis, ir, "sqeuclidean", unequal), 1)
        t_fast, res = _best(lambda: match_clusters(vis, ir, unequal=unequal), repeat)
        same = res.pairs.tolist() == [list(p) for p in ref_pairs]
        err = abs(res.cost - ref_cost)
        speed = t_ref / t_fast
        ok &= same and err <= 1e-6
        print(
            f"match_clusters {unequal:12s} {vis.shape[0]}x{ir.shape[0]}, D={vis.shape[1]}: "
            f"oracle {t_ref:.3f} s, fast {t_fast:.4f} s, speed-up {speed:.1f}x, "
            f"pairs equal {same}, |cost diff| {err:.1e}"
        )
    return ok


def bench_memory(repeat: int, b: int = 128, c: int = 500, d: int = 512, k: int = 16) -> bool:
    g = torch.Generator().manual_seed(0)
    start = F.normalize(torch.randn(c, d, generator=g), dim=1)
    inputs = torch.randn(b, d, generator=g)
    targets = torch.randperm(c, generator=g)[: b // k].repeat_interleave(k)
    targets = targets[torch.randperm(b, generator=g)]  # P x K ids, shuffled

    def oracle():
        z = oracle_logits(inputs, start, 0.05)
        return oracle_loss(z, targets), oracle_update_mean(start, inputs, targets, 0.2)

    def cc_style():  # cluster-contrast: vectorised logits, per-sample Python update loop
        z = F.normalize(inputs, dim=1) @ start.t() / 0.05
        return float(F.cross_entropy(z, targets)), oracle_update_mean(start, inputs, targets, 0.2)

    mem = ClusterMemory(d, c).train()

    def fast():
        mem.features.copy_(start)
        return float(mem(inputs, targets)), mem.features.clone()

    t_ref, (ref_loss, ref_mem) = _best(oracle, 1)
    t_cc, (cc_loss, cc_mem) = _best(cc_style, repeat)
    t_fast, (loss, new_mem) = _best(fast, repeat)
    err = max(
        abs(loss - ref_loss),
        float((new_mem - ref_mem).abs().max()),
        abs(cc_loss - ref_loss),
        float((cc_mem - ref_mem).abs().max()),
    )
    ok = err <= 1e-5
    print(
        f"ClusterMemory forward+update B={b}, C={c}, D={d} ({b // k} ids x {k}): oracle {t_ref:.3f} s, "
        f"cluster-contrast style {t_cc * 1e3:.2f} ms, fast {t_fast * 1e3:.2f} ms, speed-up {t_ref / t_fast:.1f}x "
        f"vs oracle, {t_cc / t_fast:.1f}x vs cluster-contrast style, max |diff| {err:.1e}"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="fast-path repetitions (best time kept)")
    args = ap.parse_args()
    ok = bench_match(args.repeat)
    ok &= bench_memory(args.repeat)
    if not ok:
        print("FAILED: an output differs from its oracle")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
