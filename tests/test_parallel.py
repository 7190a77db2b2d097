"""cmamlib.parallel: cached runs in worker processes, then loaded in the caller."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from cmamlib import experiments
from cmamlib.parallel import Job, run_jobs, run_jobs_timed, threads_per_worker
from cmamlib.training.cmam import CMAMConfig


def _stamp(path: str, seconds: float = 0.0) -> None:
    t0 = time.time()
    time.sleep(seconds)
    import os

    env = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    Path(path).write_text(json.dumps({"start": t0, "end": time.time(), "threads": torch.get_num_threads(), "env": env}))


def _fail(message: str) -> None:
    raise KeyError(message)


def test_jobs_run_after_their_dependencies_with_the_given_threads(tmp_path):
    before = os.environ.get("NUMBA_NUM_THREADS")
    a, b, c = (str(tmp_path / n) for n in "abc")
    jobs = [
        Job("b", _stamp, (b,), after=("a",), cost=10.0),
        Job("a", _stamp, (a, 0.5)),
        Job("c", _stamp, (c,), after=("not-a-job",)),
        Job("a", _stamp, (a, 5.0)),  # the same key again: run once (the first one)
    ]
    done = run_jobs(jobs, workers=2, threads=1, progress=False)
    assert sorted(done) == ["a", "b", "c"]
    assert run_jobs_timed([Job("d", _stamp, (str(tmp_path / "d"), 0.2))], workers=1, progress=False) >= 0.2
    sa, sb, sc = (json.loads(Path(p).read_text()) for p in (a, b, c))
    assert sb["start"] >= sa["end"]  # b waited for a
    assert sa["end"] - sa["start"] < 4.0  # the first job of key "a" ran, not the duplicate
    assert sa["threads"] == sb["threads"] == sc["threads"] == 1
    # numba's OpenMP teams get the worker's thread count too, and idle threads sleep
    assert sa["env"] == {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ.get("NUMBA_NUM_THREADS") == before  # the caller's environment is restored


def test_no_workers_runs_nothing(tmp_path):
    assert run_jobs([Job("a", _stamp, (str(tmp_path / "a"),))], workers=0) == {}
    assert not (tmp_path / "a").exists()
    assert run_jobs_timed([Job("a", _stamp, (str(tmp_path / "a"),))], workers=0) is None
    assert threads_per_worker(1) >= 1 and threads_per_worker(10_000) == 1


def test_a_failed_job_is_named_with_its_error():
    with pytest.raises(RuntimeError, match=r"job 'bad' failed: KeyError: 'no such file x.csv'"):
        run_jobs([Job("bad", _fail, ("no such file x.csv",))], workers=1, progress=False)


def test_a_dependency_cycle_is_refused():
    with pytest.raises(ValueError, match="dependency cycle"):
        run_jobs([Job("a", _stamp, ("x",), after=("b",)), Job("b", _stamp, ("y",), after=("a",))], 1, progress=False)


def test_a_run_trained_in_a_worker_is_the_run_trained_here(tiny_data, tmp_path):
    """The hand-over is exact: with the caller's thread count a worker trains the same
    weights (source pseudo labels first, then stage 1), and the experiment loads them."""
    base = CMAMConfig(
        width=8, image_size=(32, 16), batch_size=16, epochs=2, iters_per_epoch=4, k1=6, k2=3, eps=0.5, min_samples=2
    )
    market = experiments.load_market(tiny_data / "Market-1501-synth", base.image_size, progress=False)
    here = experiments.stage1_run(base, "cmam", 0, market, tmp_path / "here", progress=False)
    jobs = experiments.stage1_jobs(base, ["cmam"], [0], market, tmp_path / "pool")
    assert [j.key for j in jobs] == ["source_labels/seed0", "stage1/cmam_seed0"]
    assert jobs[1].after == ("source_labels/seed0",)
    done = run_jobs(jobs, workers=1, threads=torch.get_num_threads(), progress=False)
    assert sorted(done) == ["source_labels/seed0", "stage1/cmam_seed0"]
    loaded = experiments.stage1_run(base, "cmam", 0, market, tmp_path / "pool", progress=False)
    for m_here, m_pool in ((here.model_rg, loaded.model_rg), (here.model_g, loaded.model_g)):
        for (k, v), (_, w) in zip(m_here.state_dict().items(), m_pool.state_dict().items()):
            assert torch.equal(v, w), k
    losses = lambda h: [{k: v for k, v in r.items() if k.startswith("loss_")} for r in h]  # noqa: E731
    assert losses(here.history) == losses(loaded.history) and losses(here.history)[0]
