"""Dense k-reciprocal Jaccard distance vs the plain-loop oracle of tests/test_clustering.py.

N = 1,500 L2-normalised features (k1=30, k2=6) with re-ID-like identity structure
(about 30 images an identity, within-identity cosine ~0.6). The oracle and the fast
path run in this process on the same features; the fast path is timed after one
warm-up call (numba's kernels are compiled once and cached on disk; the warm-up time is
printed), and the two outputs are compared (|diff| <= 1e-4 on >= 99.9% of entries).

    python benchmarks/bench_jaccard.py [--n 1500] [--dim 2048 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_clustering import clustered_features, oracle_jaccard  # noqa: E402

from cmamlib.clustering import jaccard_distance, numba  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--dim", type=int, nargs="+", default=[2048, 256], help="feature dimensions to run")
    ap.add_argument("--k1", type=int, default=30)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="fast-path repetitions (best time kept)")
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, numba {'on' if numba is not None else 'off (numpy path)'}")
    t0 = time.perf_counter()
    jaccard_distance(clustered_features(64, dim=8, seed=1)[0], k1=5, k2=2)
    print(f"warm-up (numba compile or cache load): {time.perf_counter() - t0:.2f} s")
    ok = True
    for dim in args.dim:
        x, _ = clustered_features(
            args.n, dim=dim, num_ids=max(2, args.n // 30), noise=0.8 * np.sqrt(dim / 2048) ** 0, seed=0
        )
        xt = torch.from_numpy(x)
        t0 = time.perf_counter()
        ref = oracle_jaccard(x, args.k1, args.k2)
        t_ref = time.perf_counter() - t0
        t_fast = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fast = jaccard_distance(xt, args.k1, args.k2)
            t_fast = min(t_fast, time.perf_counter() - t0)
        agree = float((np.abs(fast - ref) <= 1e-4).mean())
        speed = t_ref / t_fast
        ok &= agree >= 0.999
        print(
            f"jaccard N={args.n} D={dim}: oracle {t_ref:.3f} s, fast {t_fast:.3f} s, speed-up {speed:.1f}x, "
            f"entries within 1e-4 {agree:.4%}, pairs below 1 {float((fast < 1).mean()):.2%}"
        )
    if not ok:
        print("FAILED: fast and oracle differ on more than 0.1% of entries")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
