"""Sparse k-reciprocal Jaccard distance at scale: time and peak memory.

N = 50,000 L2-normalised features of dimension 2,048 (re-ID-like: about 30 images an
identity), k1=30, k2=6, the default exact torch kNN. Prints the wall time of each run,
the stored entries and the process peak RSS (``resource.getrusage(...).ru_maxrss``,
which includes the features themselves, torch and this script). The dense reference
would need two N x N float32 arrays (2 x 10 GB at N = 50,000).

A second section checks the sparse result against the dense fast path and times the
plain-loop oracle on a small N (``--check-n``, default 1,500), so the run also shows
the values are the same.

    python benchmarks/bench_jaccard_sparse.py [--n 50000] [--dim 2048] [--threads T]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_clustering import clustered_features  # noqa: E402

from cmamlib.clustering import cluster_dbscan, jaccard_distance, jaccard_distance_sparse, numba  # noqa: E402


def make_features(
    n: int, dim: int, per_id: int = 30, latent: int = 32, noise: float = 0.8, seed: int = 0
) -> torch.Tensor:
    """Float32 re-ID-like features, generated in chunks (no float64 copy).

    Identities are points of a 32-dimensional latent space; an image is its identity
    plus latent noise, mapped to ``dim`` by a random projection and a ReLU, plus a
    little isotropic noise, then L2-normalised. At the default sizes the cosine is
    about 0.6 within an identity and 0.3 across, and DBSCAN(eps=0.6) on the Jaccard
    distance leaves roughly a fifth of the points as noise: a harder, denser case
    than well-separated Gaussian blobs.
    """
    g = torch.Generator().manual_seed(seed)
    num_ids = max(2, n // per_id)
    centres = torch.randn(num_ids, latent, generator=g)
    proj = torch.randn(latent, dim, generator=g) / latent**0.5
    ids = torch.randint(0, num_ids, (n,), generator=g)
    x = torch.empty(n, dim)
    for s in range(0, n, 4096):
        e = min(n, s + 4096)
        scale = noise * torch.sqrt(1 + torch.rand(e - s, 1, generator=g))
        z = centres[ids[s:e]] + scale * torch.randn(e - s, latent, generator=g)
        x[s:e] = torch.relu(z @ proj) + 0.05 * torch.randn(e - s, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k1", type=int, default=30)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: library defaults)")
    ap.add_argument("--check-n", type=int, default=1500, help="size of the sparse-vs-dense check (0: skip)")
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--max-gb", type=float, default=6.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        if numba is not None:
            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"torch threads {torch.get_num_threads()}, numba {'on' if numba is not None else 'off (numpy path)'}")
    ok = True

    if args.check_n:
        x, _ = clustered_features(args.check_n, dim=64, num_ids=max(2, args.check_n // 30), seed=1)
        t0 = time.perf_counter()
        sp_mat = jaccard_distance_sparse(x, args.k1, args.k2)
        t_sparse = time.perf_counter() - t0
        dense = jaccard_distance(x, args.k1, args.k2)
        back = np.ones_like(dense)
        coo = sp_mat.tocoo()
        back[coo.row, coo.col] = coo.data
        err = float(np.abs(back - dense).max())
        same = bool(np.array_equal(cluster_dbscan(dense, 0.6), cluster_dbscan(sp_mat, 0.6)))
        ok &= err <= 1e-6 and same
        print(
            f"check N={args.check_n}: sparse {t_sparse:.3f} s (incl. "
            f"numba cache load), max |sparse - dense| {err:.1e}, "
            f"DBSCAN labels identical: {same}"
        )

    x = make_features(args.n, args.dim)
    rss_features = peak_rss_gb()
    t0 = time.perf_counter()
    dist = jaccard_distance_sparse(x, args.k1, args.k2)
    elapsed = time.perf_counter() - t0
    peak = peak_rss_gb()
    t1 = time.perf_counter()
    labels = cluster_dbscan(dist, eps=0.6, min_samples=4)
    t_db = time.perf_counter() - t1
    print(
        f"jaccard_distance_sparse N={args.n} D={args.dim} k1={args.k1} k2={args.k2}: {elapsed:.1f} s, "
        f"peak RSS {peak:.2f} GB (after creating the features {rss_features:.2f} GB), "
        f"{dist.nnz / args.n:.0f} stored entries a row ({dist.data.nbytes / 1e9 + dist.indices.nbytes / 1e9:.2f} GB)"
    )
    print(f"DBSCAN(eps=0.6) on it: {t_db:.1f} s, {labels.max() + 1} clusters, {np.mean(labels < 0):.1%} noise")
    if args.n >= 50_000:
        within = elapsed <= args.max_seconds and peak <= args.max_gb
        ok &= within
        print(f"target: under {args.max_seconds:.0f} s and {args.max_gb:.0f} GB -> {'met' if within else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
