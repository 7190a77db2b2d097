"""``make gpu-check SMOKE=1``: the prepared GPU check runs end to end on the CPU at toy
scale (stages 1 and 2 with AMP and channels_last, their ceiling, clustering, torchrun
through the command line with a stop and a resume, evaluation) and writes its report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part(tmp_path):
    env = {**os.environ, "SMOKE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    assert res["smoke"] and res["device"] == "cpu"
    assert {r["stage"] for r in res["stages"]} == {"stage1", "stage2"}
    for r in res["stages"]:
        assert "error" not in r, r
        assert r["train_images_per_second"] > 0 and r["ceiling_images_per_second"] > 0
        assert r["fraction_of_ceiling"] == pytest.approx(r["train_images_per_second"] / r["ceiling_images_per_second"])
        assert r["losses_finite"] and all(math.isfinite(v) for v in r["loss_per_epoch"])
    assert any(r.get("knn_backend") == "torch" and r["seconds"] > 0 for r in res["clustering"])
    cl = res["command_line"]
    assert cl["ok"] and cl["resumed"] and cl["backend"] == "gloo"
    assert cl["stage1_epochs_after_stop"] == 1 and cl["stage1_epochs_after_resume"] == [0, 1]
    assert 0.0 <= cl["sysu_summary"]["all_mAP"] <= 1.0
    assert (tmp_path / "gpu_check_smoke.txt").read_text().startswith("gpu-check on CPU")
