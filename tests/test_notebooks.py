"""Every notebook runs headlessly through papermill with SMOKE=True and writes its JSON."""

import json
import os
import sys
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    from cmamlib.data.synth import generate

    out = tmp_path_factory.mktemp("smoke_data")
    generate(out, "tiny", seed=0, progress=False)
    return out


@pytest.fixture(autouse=True)
def _kernel_path(monkeypatch):
    # The python3 kernel spec launches "python": make it this interpreter.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke(nb, smoke_data, tmp_path):
    reports = tmp_path / "reports"
    papermill.execute_notebook(
        str(nb),
        str(tmp_path / nb.name),
        parameters={"SMOKE": True, "DATA_ROOT": str(smoke_data), "REPORTS": str(reports)},
        cwd=str(nb.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    metrics = json.loads((reports / nb.stem / "metrics.json").read_text())
    assert metrics["smoke"] is True
    pngs = list((reports / nb.stem).glob("*.png"))
    assert pngs, f"{nb.name} wrote no figure"
    check = CHECKS.get(nb.stem)
    if check:
        check(metrics)


def _check_00(m):
    assert set(m["summary"]) == {"ir_only", "visible_only", "visible_gray", "visible_infrared"}
    for row in m["table"]:
        for k in ("R1", "mAP"):
            assert 0.0 <= row[k]["mean"] <= 1.0
    assert set(m["checks"]) == {"a", "b", "c", "d"}


CHECKS = {"00_synthetic_benchmark": _check_00}
