"""The README's Python quick start runs as written (at SMOKE scale), and the README and
docs stay what a clone of the project can read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FULL = 'PRESET, BENCHMARK = "cpu-default", "default"'
SMOKE = 'PRESET, BENCHMARK = "smoke", "tiny"'
#: The team notes beside a checkout, which a clone of the project does not have (the path
#: is joined so that this file does not name it either).
OUTSIDE = "/".join(["..", "shared"])


def _snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_snippet_runs_stage1_stage2_and_evaluation(tmp_path):
    code = _snippet()
    assert FULL in code, "the snippet's scale line changed: update this test"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code.replace(FULL, SMOKE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = eval(proc.stdout.strip().splitlines()[-1])  # the dict the snippet prints
    assert set(printed) == {"all_R1", "all_mAP", "indoor_R1", "indoor_mAP"}
    assert all(0.0 <= v <= 1.0 for v in printed.values())
    for f in ("runs/s1/checkpoint.pt", "runs/s2/checkpoint.pt", "data/SYSU-MM01-synth"):
        assert (tmp_path / f).exists(), f


def test_readme_is_short_and_nothing_points_outside_the_repository():
    assert len(README.read_text()) <= 12_000
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    bad = []
    for name in tracked.stdout.splitlines():
        p = ROOT / name
        if p.suffix in {".py", ".md", ".ipynb", ".yml", ".yaml", ".toml", ".txt", ""} and p.is_file():
            if OUTSIDE in p.read_text(errors="replace"):
                bad.append(name)
    assert not bad, f"files referring to {OUTSIDE} (outside the repository): {bad}"


def test_doc_links_of_the_readme_exist():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
