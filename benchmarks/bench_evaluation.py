"""Vectorised ranking metrics vs the plain-loop oracle of tests/test_evaluation.py.

Sizes of the real protocols: SYSU-MM01 all-search (3,803 infrared queries x 301
gallery images, 96 ids) and RegDB (2,060 x 2,060, 206 ids x 10 images). Both the
oracle and the fast path are timed in this run, on the same distance matrix, and their
outputs are checked equal to 1e-6.

    python benchmarks/bench_evaluation.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_evaluation import oracle_eval  # noqa: E402

from cmamlib.evaluation import eval_regdb, eval_sysu  # noqa: E402


def _features(pids: np.ndarray, rng: np.random.Generator, base: np.ndarray, noise: float) -> np.ndarray:
    x = base[pids] + noise * rng.normal(size=(len(pids), base.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sysu_case(rng: np.random.Generator):
    num_ids = 96
    base = rng.normal(size=(num_ids, 256))
    q_pids = np.repeat(np.arange(num_ids), 40)[:3803]
    q_cams = rng.choice([3, 6], len(q_pids))
    g_pids = np.concatenate([np.repeat(np.arange(num_ids), 3), rng.integers(0, num_ids, 301 - 3 * num_ids)])
    g_cams = rng.choice([1, 2, 4, 5], len(g_pids))
    dist = -_features(q_pids, rng, base, 3.0) @ _features(g_pids, rng, base, 3.0).T
    return dist, q_pids, g_pids, q_cams, g_cams


def regdb_case(rng: np.random.Generator):
    num_ids = 206
    base = rng.normal(size=(num_ids, 256))
    pids = np.repeat(np.arange(num_ids), 10)
    dist = -_features(pids, rng, base, 3.0) @ _features(pids, rng, base, 3.0).T
    return dist, pids, pids


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _check(fast, ref) -> float:
    return max(float(np.abs(fast[0] - ref[0]).max()), abs(fast[1] - ref[1]), abs(fast[2] - ref[2]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="fast-path repetitions (best time kept)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ok = True

    dist, qp, gp, qc, gc = sysu_case(rng)
    t_ref, ref = _best(lambda: oracle_eval(dist, qp, gp, qc, gc, protocol="sysu"), 1)
    t_fast, fast = _best(lambda: eval_sysu(dist, qp, gp, qc, gc), args.repeat)
    err = _check(fast, ref)
    speed = t_ref / t_fast
    ok &= err <= 1e-6 and speed >= 10
    print(
        f"eval_sysu  {dist.shape[0]}x{dist.shape[1]}: oracle {t_ref:.3f} s, fast {t_fast:.4f} s, "
        f"speed-up {speed:.1f}x, max |diff| {err:.1e}  (R1 {fast[0][0]:.3f}, mAP {fast[1]:.3f})"
    )

    dist, qp, gp = regdb_case(rng)
    t_ref, ref = _best(lambda: oracle_eval(dist, qp, gp, protocol="regdb"), 1)
    t_fast, fast = _best(lambda: eval_regdb(dist, qp, gp), args.repeat)
    err = _check(fast, ref)
    speed = t_ref / t_fast
    ok &= err <= 1e-6 and speed >= 10
    print(
        f"eval_regdb {dist.shape[0]}x{dist.shape[1]}: oracle {t_ref:.3f} s, fast {t_fast:.4f} s, "
        f"speed-up {speed:.1f}x, max |diff| {err:.1e}  (R1 {fast[0][0]:.3f}, mAP {fast[1]:.3f})"
    )
    if not ok:
        print("FAILED: a speed-up is below 10x or an output differs from the oracle by more than 1e-6")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
