"""``python -m cmamlib check-data``: synthetic trees pass, broken trees fail naming the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmamlib.cli import PUBLISHED_COUNTS, build_parser, check_data, main
from cmamlib.utils import load_checkpoint

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
    assert report["rows"][0] == {
        "split": "train",
        "ids": train["ids"],
        "visible": train["visible_images"],
        "infrared": train["infrared_images"],
    }
    assert report["ok"] and not report["problems"] and report["fatal"] is None
    diffs = {(d["split"], d["column"]) for d in report["differences"]}
    assert diffs == {
        ("train", "ids"),
        ("train", "visible"),
        ("train", "infrared"),
        ("test", "ids"),
        ("test", "infrared"),
    }
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
    assert code == 1 and "test_ir.txt line" in out and str(gone) in out


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

    code, out = run(capsys, "llcm", str(make_llcm(tmp_path / "LLCM")))
    assert code == 0 and "(16,946)" in out and "(7,166)" in out and " * (" in out
    code, out = run(capsys, "msmt17", str(make_msmt17(tmp_path / "MSMT17")))
    assert code == 0 and "train+val" in out and "(32,621)" in out
    code, out = run(capsys, "list", str(make_csv(tmp_path / "csv")))
    assert code == 0 and "No published counts" in out
    assert [r[0] for r in check_data("list", tmp_path / "csv" / "list.csv", progress=False).rows] == ["test", "train"]


def test_python_dash_m_entry_point(tiny_data):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-m", "cmamlib", "check-data", "regdb", str(tiny_data / "RegDB-synth"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all trials" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cmamlib"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "check-data" in proc.stderr  # the help lists the commands


# ----------------------------------------------------------------------------- presets and overrides


def test_presets_resolve_and_paper_values():
    from cmamlib.presets import PRESETS, load_config
    from cmamlib.training.cmam import CMAMConfig
    from cmamlib.training.selftrain import SelfTrainConfig

    assert list(PRESETS) == [
        "smoke",
        "cpu-default",
        "cpu-long",
        "paper-sysu-mm01",
        "paper-regdb",
        "paper-sysu-mm02",
        "paper-llcm",
    ]
    cpu = load_config("cpu-default")
    assert cpu.stage1 == CMAMConfig() and cpu.stage2 == SelfTrainConfig() and cpu.data.synthetic
    long = load_config("cpu-long")  # cpu-default but for the fields its comment explains
    from cmamlib.training.cmam import EARLIER_DEFAULTS as S1_EARLIER
    from cmamlib.training.selftrain import EARLIER_DEFAULTS as S2_EARLIER

    assert long.stage1 == replace(CMAMConfig(), **S1_EARLIER, gray_mode="luma", sim_weight=0.05)
    assert long.stage2 == replace(
        SelfTrainConfig(),
        **S2_EARLIER,
        epochs=24,
        gray_mode="luma",
        temperature=0.1,
        k1=5,
        k2=3,
        min_samples=2,
        eps=0.5,
    )
    smoke = load_config("smoke")
    assert smoke.stage1.width == smoke.stage2.width == 8 and smoke.stage1.image_size == (32, 16)
    sizes = {
        "paper-sysu-mm01": (384, 128),
        "paper-regdb": (384, 128),
        "paper-sysu-mm02": (288, 144),
        "paper-llcm": (288, 144),
    }
    for name, size in sizes.items():
        c = load_config(name)
        assert c.require_pretrained and c.stage1.pretrained is None and not c.data.synthetic
        assert c.data.target == name[len("paper-") :] and c.data.source == "market-1501"
        for s in (c.stage1, c.stage2):
            assert (s.arch, s.width, s.last_stride, s.image_size, s.amp) == ("resnet50", 64, 1, size, True)
            assert (s.k1, s.k2, s.min_samples) == (30, 6, 4)
        assert (c.stage1.batch_size, c.stage1.num_instances, c.stage1.lr) == (64, 16, 3.5e-4)
        assert (c.stage2.batch_size, c.stage2.num_instances, c.stage2.lr, c.stage2.eps) == (128, 16, 1e-4, 0.4)
        assert c.stage1.epochs * c.stage1.iters_per_epoch == 30000  # the code's 2 runs x 15k
        # each stage-2 phase (DBSCAN, then k-means) is one of the code's 12k-iteration runs;
        # RegDB: k-means only (the code's script); LLCM: no k-means phase (no script)
        phases = {
            "paper-sysu-mm01": (12000, 12000),
            "paper-regdb": (0, 12000),
            "paper-sysu-mm02": (10000, 10000),
            "paper-llcm": (10000, 0),
        }[name]
        assert (c.stage2.epochs * c.stage2.iters_per_epoch, c.stage2.kmeans_epochs * c.stage2.iters_per_epoch) == phases
    assert load_config("paper-regdb").data.root("target", "/d") == Path("/d/RegDB")
    assert load_config("smoke").data.root("source", "/d") == Path("/d/Market-1501-synth")


def test_overrides_are_typed_and_errors_name_the_key():
    from cmamlib.presets import ConfigError, load_config

    c = load_config(
        "smoke",
        [
            "stage2.eps=0.45",
            "stage1.image_size=64x32",
            "stage1.augment.erasing=0",
            "init_from=runs/s1",
            "stage2.kmeans_k=[400,395]",
            "stage2.match_threshold=none",
            "stage1.lr=1e-4",
            "data.target=RegDB",
            "stage1.sync_bn=true",
            "stage2.iters_per_epoch=null",
        ],
    )
    assert (c.stage2.eps, c.stage1.image_size, c.stage1.augment.erasing, c.init_from) == (
        0.45,
        (64, 32),
        0.0,
        "runs/s1",
    )
    assert (c.stage2.kmeans_k, c.stage2.match_threshold, c.stage1.lr, c.data.target) == (
        (400, 395),
        None,
        1e-4,
        "regdb",
    )
    assert c.stage1.sync_bn is True and c.stage2.iters_per_epoch is None
    assert c.data.root("target", "d") == Path("d/RegDB-synth")
    cases = {
        "stage2.epss=1": r"unknown config key 'stage2.epss' \(did you mean stage2.eps\?\)",
        "stage2.eps=abc": r"stage2.eps='abc': expected float",
        "stage1.epochs=1.5": r"stage1.epochs='1.5': expected int",
        "stage1.use_gray_view=maybe": r"stage1.use_gray_view='maybe': expected bool",
        "stage1.image_size=1,2,3": r"stage1.image_size=.*expected 2 values",
        "bogus=1": r"unknown config key 'bogus'",
        "stage1.augment.flipp=1": r"did you mean stage1.augment.flip",
        "stage2.batch_size=30": r"stage2: batch_size=30: expected a multiple of num_instances=4",
        "data.target=cuhk03": r"data.target: unknown dataset name 'cuhk03'",
        "data.target=llcm": r"synthetic benchmark has no llcm",
        "stage1": r"expected key=value",
    }
    for item, pattern in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            load_config("smoke", [item])
    with pytest.raises(ConfigError, match=r"not a preset \(did you mean paper-sysu-mm02\?\)"):
        load_config("paper-sysu")


def test_yaml_config_with_base_and_saved_config_roundtrip(tmp_path):
    from cmamlib.presets import ConfigError, load_config, read_config, save_config

    f = tmp_path / "mine.yaml"
    f.write_text("base: smoke\nstage1:\n  epochs: 3\n  lr: 3.5e-4\nstage2:\n  eps: 0.45\ndata:\n  cache_dir: /tmp/c\n")
    c = load_config(str(f), ["stage2.eps=0.5"])
    assert (c.stage1.epochs, c.stage1.lr, c.stage2.eps, c.stage1.width, c.data.cache_dir) == (
        3,
        3.5e-4,
        0.5,
        8,
        "/tmp/c",
    )
    assert c.preset == str(f)
    save_config(c, tmp_path / "config.yaml", {"command": "x"})
    assert read_config(tmp_path / "config.yaml") == c
    (tmp_path / "bad.yaml").write_text("stage1: {epochs: ten}\n")
    with pytest.raises(ConfigError, match="stage1.epochs='ten': expected int"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


# ----------------------------------------------------------------------------- train / evaluate


def _cli(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "cmamlib", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def smoke_runs(tiny_data, tmp_path_factory):
    """`train stage1` -> `train stage2 init_from=...` -> `evaluate`, each a subprocess."""
    out = tmp_path_factory.mktemp("cli_runs")
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress"]
    p1 = _cli("train", "stage1", *common, "--out", str(out / "s1"))
    assert p1.returncode == 0, p1.stdout + p1.stderr
    p2 = _cli("train", "stage2", *common, "--out", str(out / "s2"), f"init_from={out / 's1'}", "stage2.eps=0.5")
    assert p2.returncode == 0, p2.stdout + p2.stderr
    pe = _cli(
        "evaluate",
        "--dataset",
        "sysu-mm01",
        "--root",
        str(tiny_data / "SYSU-MM01-synth"),
        "--checkpoint",
        str(out / "s2"),
        "--reports",
        str(out / "reports"),
        "--no-progress",
    )
    assert pe.returncode == 0, pe.stdout + pe.stderr
    return out, (p1, p2, pe)


def test_train_stage1_stage2_evaluate(smoke_runs):
    import yaml

    from cmamlib.presets import read_config

    out, (p1, p2, pe) = smoke_runs
    assert "stage1 finished: 2 epochs" in p1.stdout and "stage2 finished: 2 epochs" in p2.stdout
    for s in ("s1", "s2"):
        for f in ("config.yaml", "checkpoint.pt", "log.jsonl", "metrics.json"):
            assert (out / s / f).is_file(), f"{s}/{f}"
        assert len((out / s / "log.jsonl").read_text().splitlines()) == 2
    c2 = read_config(out / "s2" / "config.yaml")
    assert c2.stage2.eps == 0.5 and c2.init_from == str(out / "s1") and c2.preset == "smoke"
    run_block = yaml.safe_load((out / "s2" / "config.yaml").read_text())["_run"]
    assert run_block["stage"] == "stage2" and run_block["data"]["init_from_resolved"] == str((out / "s1").resolve())
    m1 = json.loads((out / "s1" / "metrics.json").read_text())
    assert m1["stage"] == "stage1" and m1["epochs"] == 2 and m1["config"]["stage1"]["width"] == 8 and "_meta" in m1
    # the report of evaluate: the notebooks' JSON (write_metrics) + the run's config beside it
    rep = out / "reports" / "eval_s2_sysu-mm01"
    m = json.loads((rep / "metrics.json").read_text())
    assert m["stage"] == "stage2" and m["complete"] and m["protocol"] == "baseline"
    assert set(m["results"]) == {"all", "indoor"} and m["results"]["all"]["num_trials"] == 10
    assert 0 <= m["summary"]["all_mAP"] <= 1 and m["config"]["stage2"]["eps"] == 0.5 and "_meta" in m
    assert read_config(rep / "config.yaml") == c2
    assert "sysu/all" in pe.stdout and "written:" in pe.stdout


def test_rerun_resumes_and_a_changed_config_is_refused(smoke_runs, tiny_data, capsys):
    out, _ = smoke_runs
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress"]
    before = (out / "s1" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["train", "stage1", *common, "--out", str(out / "s1")]) == 0  # finished: returns at once
    assert (out / "s1" / "checkpoint.pt").stat().st_mtime_ns == before
    assert "stage1 finished: 2 epochs" in capsys.readouterr().out
    assert main(["train", "stage1", *common, "--out", str(out / "s1"), "stage1.eps=0.6"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 's1'} holds a stage1 run started with another config (stage1.eps: 0.5 -> 0.6)" in err
    # hardware fields may change on resume
    assert main(["train", "stage1", *common, "--out", str(out / "s1"), "stage1.eval_batch_size=32"]) == 0


def test_stage2_needs_a_finished_stage1_run(smoke_runs, tiny_data, tmp_path, capsys):
    import torch

    out, _ = smoke_runs
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress", "--out", str(tmp_path / "s2")]
    assert main(["train", "stage2", *common]) == 2
    assert "train stage2 needs the stage-1 run: add init_from=RUN_DIR" in capsys.readouterr().err
    assert main(["train", "stage2", *common, f"init_from={tmp_path / 'nope'}"]) == 1
    assert f"stage-1 run {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "stage2", *common, f"init_from={tmp_path / 'empty'}"]) == 1
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["train", "stage2", *common, f"init_from={out / 's2'}"]) == 1  # a stage-2 run
    assert "is a stage2 run, expected a stage1 run" in capsys.readouterr().err
    half = tmp_path / "half"
    shutil.copytree(out / "s1", half)
    state = load_checkpoint(half / "checkpoint.pt")
    state["epoch"] = 0
    torch.save(state, half / "checkpoint.pt")
    assert main(["train", "stage2", *common, f"init_from={half}"]) == 1
    err = capsys.readouterr().err
    assert "is unfinished: its checkpoint holds epoch 1 of 2" in err and f"--out {half}" in err
    assert main(["train", "stage2", *common, f"init_from={out / 's1'}", "stage2.width=16"]) == 2
    assert "the stage-1 backbone differs from stage2's (width: stage 1 8, stage2.width 16)" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()  # nothing was started


def test_train_usage_errors(tiny_data, tmp_path, capsys):
    assert main(["train", "--list-presets"]) == 0
    assert "paper-sysu-mm01" in capsys.readouterr().out
    assert main(["train", "stage1", "--config", "smoke", "--out", str(tmp_path), "stage1.epochs=zero"]) == 2
    assert "stage1.epochs='zero': expected int" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "stage1",
                "--config",
                "paper-sysu-mm01",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "stage1.pretrained=/path/to/resnet50.pth" in capsys.readouterr().err
    assert (
        main(["train", "stage1", "--config", "smoke", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    )
    assert "Market-1501-synth" in capsys.readouterr().err  # the missing dataset folder is named
    with pytest.raises(SystemExit):
        main(["evaluate", "--dataset", "cuhk03", "--root", "x", "--checkpoint", "y"])


def test_evaluate_stage1_official_and_other_datasets(smoke_runs, tiny_data, capsys):
    out, _ = smoke_runs
    rep = out / "reports"
    code = main(
        [
            "evaluate",
            "--dataset",
            "sysu-mm01",
            "--root",
            str(tiny_data / "SYSU-MM01-synth"),
            "--checkpoint",
            str(out / "s1" / "checkpoint.pt"),
            "--protocol",
            "official",
            "--reports",
            str(rep),
            "--no-progress",
        ]
    )
    assert code == 0 and "sysu-official/all" in capsys.readouterr().out
    m = json.loads((rep / "eval_s1_sysu-mm01_official" / "metrics.json").read_text())
    assert m["stage"] == "stage1" and m["results"]["all"]["info"]["protocol"] == "official"
    code = main(
        [
            "evaluate",
            "--dataset",
            "regdb",
            "--root",
            str(tiny_data / "RegDB-synth"),
            "--checkpoint",
            str(out / "s2"),
            "--reports",
            str(rep),
            "--no-progress",
            "--name",
            "regdb_eval",
        ]
    )
    assert code == 0
    m = json.loads((rep / "regdb_eval" / "metrics.json").read_text())
    assert set(m["results"]) == {"visible_to_thermal", "thermal_to_visible"} and m["trial"] == 1
    code = main(
        [
            "evaluate",
            "--dataset",
            "regdb",
            "--root",
            str(tiny_data / "RegDB-synth"),
            "--checkpoint",
            str(out / "s2"),
            "--protocol",
            "official",
            "--reports",
            str(rep),
            "--no-progress",
        ]
    )
    assert code == 2 and "exists for sysu-mm01 only" in capsys.readouterr().err


def test_resume_accepts_config_fields_added_later():
    """A checkpoint written before a config field existed (``non_local``, ``sync_bn``)
    resumes when the run keeps that field's default, and not otherwise."""
    from dataclasses import replace

    from cmamlib.training.cmam import CMAMConfig
    from cmamlib.training.common import check_resume_config, config_to_dict

    cfg = CMAMConfig()
    old = {k: v for k, v in config_to_dict(cfg).items() if k not in ("non_local", "sync_bn")}
    check_resume_config({"config": old}, cfg, "checkpoint.pt")
    with pytest.raises(ValueError, match=r"sync_bn: None -> True"):
        check_resume_config({"config": old}, replace(cfg, sync_bn=True), "checkpoint.pt")


def test_per_modality_clustering_overrides():
    """``stage2.eps=0.6,0.45`` gives a (visible, infrared) pair; one value stays a scalar."""
    from cmamlib.presets import load_config

    c = load_config("smoke", ["stage2.eps=0.6,0.45", "stage2.min_samples=[3,2]", "stage2.k1=7"])
    assert (c.stage2.eps, c.stage2.min_samples, c.stage2.k1) == ((0.6, 0.45), (3, 2), 7)
    assert c.stage2.dbscan_params("infrared") == (7, c.stage2.k2, 0.45, 2)


class _RunsCode:
    """Pickles to a call of ``marker.touch()``: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_is_refused(smoke_runs, tiny_data, tmp_path, capsys):
    """``evaluate``, ``init_from`` and resume read checkpoints with ``weights_only=True``:
    a checkpoint carrying a pickled object that executes code on load is refused with a
    message naming the file, and the code never runs; every checkpoint cmamlib writes
    (stage 1, stage 2, with numpy labels and RNG states) still loads."""
    import torch

    from cmamlib.utils import UnsafeCheckpointError

    out, _ = smoke_runs
    for s in ("s1", "s2"):
        state = load_checkpoint(out / s / "checkpoint.pt")
        assert state["stage"] in ("cmam", "selftrain") and isinstance(state["labels"], np.ndarray)
    marker = tmp_path / "code_ran"
    bad = tmp_path / "bad"
    shutil.copytree(out / "s2", bad)
    state = load_checkpoint(bad / "checkpoint.pt")
    state["payload"] = _RunsCode(marker)
    torch.save(state, bad / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpointError, match="refused to load") as e:
        load_checkpoint(bad / "checkpoint.pt")
    assert str(bad / "checkpoint.pt") in str(e.value)
    rc = main(
        [
            "evaluate",
            "--dataset",
            "sysu-mm01",
            "--root",
            str(tiny_data / "SYSU-MM01-synth"),
            "--checkpoint",
            str(bad),
            "--reports",
            str(tmp_path / "reports"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and f"{bad / 'checkpoint.pt'}: refused to load" in err, err
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress"]
    assert main(["train", "stage2", *common, "--out", str(bad), f"init_from={out / 's1'}", "stage2.eps=0.5"]) == 1
    assert "refused to load" in capsys.readouterr().err  # resume reads it too
    assert not marker.exists()


def test_runs_write_tensorboard_events_equal_to_the_log(smoke_runs):
    """With the ``tensorboard`` package installed (the locked dev environment), every run
    folder also holds TensorBoard event files: each numeric field of every ``log.jsonl``
    row is a scalar at step = epoch, with the same value (float32 in the event file)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cmamlib.training.common import tensorboard_tag

    out, _ = smoke_runs
    for s in ("s1", "s2"):
        assert list((out / s).glob("events.out.tfevents.*")), f"{s}: no event file"
        acc = EventAccumulator(str(out / s), size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        rows = [json.loads(ln) for ln in (out / s / "log.jsonl").read_text().splitlines()]
        checked = 0
        for row in rows:
            for k, v in row.items():
                if k == "epoch" or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                tag = tensorboard_tag(k)
                assert tag in tags, f"{s}: {k} missing ({tag})"
                got = {e.step: e.value for e in acc.Scalars(tag)}
                assert got[row["epoch"]] == pytest.approx(v, rel=1e-6, abs=1e-30), f"{s} {k} epoch {row['epoch']}"
                checked += 1
        assert checked >= 20
        assert (
            {"loss/mem_a", "vis/clusters", "pairs/correct_fraction", "lr/end", "train/images_per_second"} <= tags
            if s == "s2"
            else {"loss/ce_rg_rgb", "loss/tri_rg_rgb", "labels/clusters", "lr/end"} <= tags
        )


def test_source_labels_then_stage1_in_classifier_mode(tiny_data, tmp_path):
    """`source-labels` writes the label file and its quality once (reused on rerun);
    `train stage1` in classifier mode (the default) without it makes them in its run
    folder first, saying so, and reuses them when rerun."""
    common = ["--config", "smoke", "--data-root", str(tiny_data), "--no-progress"]
    labels = tmp_path / "labels.csv"
    p = _cli("source-labels", *common, "--out", str(labels), "stage1.epochs=1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "written" in p.stdout and "ARI" in p.stdout and labels.is_file()
    meta = json.loads((tmp_path / "labels.csv.json").read_text())
    assert {"ari", "purity", "clusters"} <= set(meta["quality"]) and not meta["config"]["use_gray_view"]
    p = _cli("source-labels", *common, "--out", str(labels), "stage1.epochs=1")
    assert p.returncode == 0 and "reused" in p.stdout
    own = tmp_path / "own"
    p = _cli("train", "stage1", *common, "--out", str(own), "stage1.epochs=1")
    assert p.returncode == 0, p.stdout + p.stderr
    made = own / "source_labels.csv"
    assert "stage1.label_file is not set: making the source pseudo labels once in" in p.stdout
    assert f"source labels written: {made}" in p.stdout and made.is_file()
    assert yaml.safe_load((own / "config.yaml").read_text())["stage1"]["label_file"] == str(made)
    p = _cli("train", "stage1", *common, "--out", str(own), "stage1.epochs=1")
    assert p.returncode == 0 and f"source labels reused: {made}" in p.stdout, p.stdout + p.stderr
    p = _cli(
        "train",
        "stage1",
        *common,
        "--out",
        str(tmp_path / "s1"),
        "stage1.identity_loss=classifier",
        f"stage1.label_file={labels}",
        "stage1.schedule=two_runs",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ce_rg_rgb" in p.stdout
