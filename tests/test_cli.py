"""``python -m cmamlib check-data``: synthetic trees pass, broken trees fail naming the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmamlib.cli import PUBLISHED_COUNTS, build_parser, check_data, main

SYNTH = {
    "sysu-mm01": "SYSU-MM01-synth",
    "sysu-mm02": "SYSU-MM02-synth",
    "regdb": "RegDB-synth",
    "market1501": "Market-1501-synth",
}


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["check-data", *argv, "--no-progress", "--workers", "2"])
    return code, capsys.readouterr().out


def copy(tiny_data: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny_data / name, dst)
    return dst


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("dataset", sorted(SYNTH))
def test_synthetic_trees_pass(tiny_data, capsys, dataset):
    code, out = run(capsys, dataset, str(tiny_data / SYNTH[dataset]))
    assert code == 0, out
    assert out.splitlines()[-1].startswith("OK: readable, counts differ")
    assert "PROBLEMS" not in out
    # the published counts are printed and every difference is flagged
    first_split, counts = next(iter(PUBLISHED_COUNTS["market-1501" if dataset == "market1501" else dataset].items()))
    assert f"({next(v for v in counts.values() if v):,})" in out
    assert " * (" in out
    # --strict turns count differences into a failure
    code, out = run(capsys, dataset, str(tiny_data / SYNTH[dataset]), "--strict")
    assert code == 1 and out.splitlines()[-1].startswith("FAILED")


def test_table_counts_and_json(tiny_data, capsys, tmp_path):
    from cmamlib.data.readers import read_sysu_mm01, summarize

    root = tiny_data / "SYSU-MM01-synth"
    code, out = run(capsys, "SYSU_MM01", str(root), "--json", str(tmp_path / "r.json"))
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    train = summarize(read_sysu_mm01(root, "train"))
    assert report["rows"][0] == {"split": "train", "ids": train["ids"], "visible": train["visible_images"],
                                 "infrared": train["infrared_images"]}
    assert report["ok"] and not report["problems"] and report["fatal"] is None
    diffs = {(d["split"], d["column"]) for d in report["differences"]}
    assert diffs == {("train", "ids"), ("train", "visible"), ("train", "infrared"), ("test", "ids"), ("test", "infrared")}
    assert "official-protocol files present" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("train"))
    assert f"{train['ids']} * (395)" in line and "(22,258)" in line and "(11,909)" in line


def test_broken_sysu_tree_names_every_file(tiny_data, capsys, tmp_path):
    root = copy(tiny_data, "SYSU-MM01-synth", tmp_path)
    jpgs = sorted(root.glob("cam3/*/*.jpg"))
    bad = truncate(jpgs[0])
    renamed = jpgs[1].with_name("img_1.jpg")
    jpgs[1].rename(renamed)
    stray = root / "cam1" / "notes.txt"
    stray.write_text("x")
    # one gallery image fewer than exp/rand_perm_cam.mat permutes: the tree and the file disagree
    folder = next(d for d in sorted(root.glob("cam1/*")) if len(list(d.iterdir())) > 1)
    sorted(folder.iterdir())[-1].unlink()
    code, out = run(capsys, "sysu-mm01", str(root))
    assert code == 1
    assert f"{bad}: unreadable image" in out
    assert str(renamed) in out and "expected a file name NNNN.jpg" in out
    assert str(stray) in out
    assert out.splitlines()[-1].startswith("FAILED: not readable")
    assert f"rand_perm_cam{{1}}{{{int(folder.name)}}} permutes 2 images, {folder} holds 1" in out


def test_missing_list_entry_and_unreadable_regdb(tiny_data, capsys, tmp_path):
    root = copy(tiny_data, "RegDB-synth", tmp_path)
    bmps = sorted(root.glob("Thermal/*/*.bmp"))
    bmps[0].unlink()
    bad = truncate(bmps[1])
    code, out = run(capsys, "regdb", str(root))
    assert code == 1
    assert f"referenced image {bmps[0]} does not exist" in out and "idx" in out
    assert f"{bad}: unreadable image" in out
    assert out.count(str(bmps[0])) == 1  # named by 10 trials' lists, listed once


def test_mis_named_market_file_and_sysu_mm02_missing_entry(tiny_data, capsys, tmp_path):
    root = copy(tiny_data, "Market-1501-synth", tmp_path)
    bad = root / "query" / "person.jpg"
    shutil.copy(next(root.glob("query/*.jpg")), bad)
    code, out = run(capsys, "market-1501", str(root))
    assert code == 1 and str(bad) in out and "PPPP_cCsS_FFFFFF_NN.jpg" in out

    root = copy(tiny_data, "SYSU-MM02-synth", tmp_path)
    gone = sorted(root.glob("test/ir/*.jpg"))[0]
    gone.unlink()
    code, out = run(capsys, "sysu-mm02", str(root))
    assert code == 1 and f"test_ir.txt line" in out and str(gone) in out


def test_first_20_problems_then_a_count(tiny_data, capsys, tmp_path):
    root = copy(tiny_data, "Market-1501-synth", tmp_path)
    files = sorted(root.glob("bounding_box_train/*.jpg"))[:25]
    for f in files:
        truncate(f)
    code, out = run(capsys, "market1501", str(root))
    assert code == 1
    assert "PROBLEMS: 25" in out and "... and 5 more" in out
    assert sum("unreadable image" in ln for ln in out.splitlines()) == 20


def test_layout_errors_exit_1(tmp_path, capsys):
    code, out = run(capsys, "sysu-mm01", str(tmp_path / "nope"))
    assert code == 1 and "ERROR:" in out and "does not exist" in out
    (tmp_path / "Visible").mkdir()
    code, out = run(capsys, "regdb", str(tmp_path))
    assert code == 1 and "missing" in out
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["check-data", "cuhk03", str(tmp_path)])
    assert e.value.code == 2


def test_llcm_msmt17_and_list(tmp_path, capsys):
    from test_readers import make_csv, make_llcm, make_msmt17

    assert run(capsys, "llcm", str(make_llcm(tmp_path / "LLCM")))[0] == 0
    code, out = run(capsys, "msmt17", str(make_msmt17(tmp_path / "MSMT17")))
    assert code == 0 and "train+val" in out and "(32,621)" in out
    code, out = run(capsys, "list", str(make_csv(tmp_path / "csv")))
    assert code == 0 and "No published counts" in out
    assert [r[0] for r in check_data("list", tmp_path / "csv" / "list.csv", progress=False).rows] == ["test", "train"]


def test_python_dash_m_entry_point(tiny_data):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-m", "cmamlib", "check-data", "regdb", str(tiny_data / "RegDB-synth"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all trials" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cmamlib"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "check-data" in proc.stderr  # the help lists the commands
