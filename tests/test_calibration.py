"""Calibration of the synthetic benchmark (notebook 00) at smoke scale."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cmamlib import calibration
from cmamlib.training.supervised import SupervisedConfig

TINY = SupervisedConfig(
    width=8, image_size=(32, 16), batch_size=16, num_instances=4, epochs=1, iters_per_epoch=2, device="cpu"
)


def test_model_configs_are_the_documented_recipes():
    assert calibration.model_config("visible_only", TINY) == TINY
    c = calibration.model_config("visible_gray", TINY)
    assert (c.gray_prob, c.gray_mode, c.cross_modality_batches) == (0.5, "luma", False)
    d = calibration.model_config("visible_infrared", TINY)
    assert (d.gray_prob, d.gray_mode, d.cross_modality_batches) == (0.5, "luma", True)
    with pytest.raises(ValueError, match="unknown calibration model 'x'"):
        calibration.model_config("x", TINY)


def test_run_calibration_with_a_probe_config(tiny_data):
    root = tiny_data / "SYSU-MM01-synth"
    probe = replace(calibration.model_config("visible_infrared", TINY), epochs=2)
    res = calibration.run_calibration(
        root,
        seeds=(0,),
        config=TINY,
        models=("visible_infrared",),
        trials=2,
        progress=False,
        model_configs={"visible_infrared": probe},
    )
    assert set(res["summary"]) == {"visible_infrared"} and "d" in res["checks"]
    assert 0 <= res["summary"]["visible_infrared"]["mAP"]["mean"] <= 1
    assert [r["protocol"] for r in res["table"]] == ["SYSU all-search IR->V", "SYSU indoor-search IR->V"]
    with pytest.raises(ValueError, match=r"model_configs\['visible_infrared'\].image_size"):
        calibration.run_calibration(
            root,
            seeds=(0,),
            config=TINY,
            models=("visible_infrared",),
            trials=2,
            progress=False,
            model_configs={"visible_infrared": replace(probe, image_size=(64, 32))},
        )


def test_calibration_models_are_cached_and_reloaded(tiny_data, tmp_path, monkeypatch):
    """With runs_dir, a rerun loads every model instead of training it and gives the same
    metrics and training times; another config trains a model of its own beside it, and
    notebook 03's upper bound (the same config and images) loads the calibration's."""
    from cmamlib import experiments
    from cmamlib.training import supervised

    root = tiny_data / "SYSU-MM01-synth"
    kw = dict(seeds=(0,), config=TINY, models=("ir_only", "visible_infrared"), trials=2, progress=False)
    first = calibration.run_calibration(root, runs_dir=tmp_path, **kw)
    d_cfg = replace(calibration.model_config("visible_infrared", TINY), seed=0)
    path = supervised.supervised_run_path(tmp_path, "visible_infrared", d_cfg)
    assert path.exists() and path.parent.parent == tmp_path / "supervised"
    assert path.parent.name.startswith("visible_infrared_") and path.parent.name.endswith("_seed0")

    def no_training(*a, **k):
        raise AssertionError("trained although cached")

    with monkeypatch.context() as m:
        m.setattr(supervised, "run_supervised", no_training)
        again = calibration.run_calibration(root, runs_dir=tmp_path, **kw)
        assert again["per_seed"] == first["per_seed"] and again["summary"] == first["summary"]
        sysu = experiments.load_sysu(root, TINY.image_size, progress=False)
        model = experiments.supervised_run(d_cfg, sysu, tmp_path, progress=False)
        ref = supervised.run_supervised_cached(d_cfg, sysu.train.records, sysu.train.images, path, progress=False)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.model.state_dict().values()))
    other = replace(TINY, lr=1e-3)
    calibration.run_calibration(root, runs_dir=tmp_path, **{**kw, "config": other})
    other_path = supervised.supervised_run_path(tmp_path, "visible_infrared", replace(d_cfg, lr=1e-3))
    assert other_path.exists() and other_path != path and path.exists()


def test_regdb_calibration_runs_both_models_and_checks_the_rule(tmp_path):
    """Tiny RegDB-synth: both calibration models train per split and seed, every figure is
    a fraction, and the check compares (d)'s weaker direction with visible-only's stronger."""
    from dataclasses import replace

    from cmamlib.calibration import run_regdb_calibration
    from cmamlib.data.synth import generate
    from cmamlib.training.supervised import SupervisedConfig

    generate(tmp_path, "tiny", seed=0, datasets=("regdb",), progress=False)
    cfg = replace(SupervisedConfig(), width=8, image_size=(32, 16), batch_size=16, epochs=1, iters_per_epoch=2)
    res = run_regdb_calibration(tmp_path / "RegDB-synth", seeds=(0,), config=cfg, splits=(1, 2), progress=False)
    assert set(res["summary"]) == {"visible_infrared", "visible_only"}
    for st in res["summary"].values():
        assert all(0.0 <= v["mean"] <= 1.0 for v in st.values())
    chk = res["checks"]["regdb"]
    d = min(res["summary"]["visible_infrared"][k]["mean"] for k in ("v2t_R1", "t2v_R1"))
    assert chk["value"] == d and chk["pass"] == (d >= 0.6 and chk["visible_only"] <= d / 2)
