"""Notebook runs in worker processes (cmamlib.parallel) vs one after another in this process.

The same set of cached stage-1 runs (each seed's source pseudo labels, then stage-1
variants of that seed) is trained twice from nothing: sequentially here with torch's
threads (``workers=0``, the notebooks before cmamlib.parallel), and by
:func:`cmamlib.parallel.run_jobs` with ``--workers`` processes. Prints both wall times
and the speed-up; the weights differ between the two (a CPU training's float sums depend
on the thread count), the runs' configs do not.

    python benchmarks/bench_parallel.py [--epochs 2] [--seeds 0 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmamlib import experiments  # noqa: E402
from cmamlib.data import synth  # noqa: E402
from cmamlib.parallel import run_jobs, threads_per_worker  # noqa: E402
from cmamlib.training.cmam import CMAMConfig  # noqa: E402

VARIANTS = ["rgb_only", "rgb_gray_one_net", "cmam"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data", help="benchmark root (generated with the default preset if missing)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.data)
    if not (root / "Market-1501-synth").exists():
        synth.generate(root, "default", seed=0)
    base = replace(CMAMConfig(), epochs=args.epochs)
    market = experiments.load_market(root / "Market-1501-synth", base.image_size, progress=False)
    jobs_for = lambda d: experiments.stage1_jobs(base, VARIANTS, args.seeds, market, d)  # noqa: E731
    print(f"{len(jobs_for('x'))} runs: source labels + {VARIANTS} x seeds {args.seeds}, {args.epochs} epochs each")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        for j in jobs_for(Path(tmp) / "sequential"):
            j.fn(*j.args, **j.kwargs)
        seq = time.time() - t0
        shutil.rmtree(Path(tmp) / "sequential")
        t0 = time.time()
        run_jobs(jobs_for(Path(tmp) / "pool"), args.workers, progress=False)
        par = time.time() - t0
    print(f"sequential, this process ({__import__('torch').get_num_threads()} threads): {seq:6.1f} s")
    print(f"run_jobs, {args.workers} workers x {threads_per_worker(args.workers)} threads:     {par:6.1f} s")
    print(f"speed-up: {seq / par:.2f}x")


if __name__ == "__main__":
    main()
