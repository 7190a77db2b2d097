"""Stage 2 (self-training) at smoke scale: runs, logs its diagnostics, never reads target
labels, resumes exactly, runs its ablations; label overrides against hand-built cases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cmamlib.data import Record, read_sysu_mm01
from cmamlib.data.loading import load_images
from cmamlib.models import build_model
from cmamlib.training.loop import StopTraining
from cmamlib.training.selftrain import SelfTrainConfig, apply_overrides, run_selftrain, selftrain_features

SMOKE = SelfTrainConfig(
    width=8,
    image_size=(32, 16),
    batch_size=16,
    num_instances=4,
    epochs=2,
    iters_per_epoch=3,
    k1=6,
    k2=3,
    eps=0.5,
    min_samples=2,
    eval_batch_size=64,
    device="cpu",
)


@pytest.fixture(scope="module")
def target(tiny_data):
    recs = read_sysu_mm01(tiny_data / "SYSU-MM01-synth", "train")
    return recs, load_images(recs, SMOKE.image_size, progress=False)


def _eval(a, b):
    f = selftrain_features(a, b, SMOKE.gray_mode, SMOKE.fusion, batch_size=32)
    return {"dim": int(f(EVAL_IMAGES[0]).shape[1]), "nested": {"ok": 1}}


EVAL_IMAGES: list = []


@pytest.fixture(scope="module")
def smoke(target, tmp_path_factory):
    recs, imgs = target
    EVAL_IMAGES[:] = [imgs[:6]]
    run_dir = tmp_path_factory.mktemp("selftrain_full")
    res = run_selftrain(SMOKE, recs, imgs, run_dir=run_dir, progress=False, eval_fn=_eval, eval_every=1)
    return res, run_dir


def _weights(res):
    sd = {f"a.{k}": v for k, v in res.model_a.state_dict().items()}
    if res.model_b is not None:
        sd.update({f"b.{k}": v for k, v in res.model_b.state_dict().items()})
    return sd


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_smoke_logs_and_checkpoint(smoke, target):
    res, run_dir = smoke
    recs, _ = target
    assert len(res.history) == 2 and res.labels.shape == (len(recs),)
    row = res.history[-1]
    for key in ("loss_mem_a", "loss_mem_b", "loss_kl_a", "loss_kl_b", "loss_dist", "loss_total"):
        assert key in row and np.isfinite(row[key]), key
    for pre in ("vis", "ir", "unified"):
        for q in ("clusters", "noise_fraction", "ari", "nmi", "purity"):
            assert f"{pre}_{q}" in row, f"{pre}_{q}"
    assert row["vis_clusters"] >= 1 and row["ir_clusters"] >= 1
    assert row["pairs"] >= 1 and 0 <= row["pairs_correct_fraction"] <= 1
    assert 0 <= row["unified_purity"] <= 1 and row["cross_ids"] >= 1
    # evaluation every epoch (eval_every=1): flattened under eval_
    assert all(r["eval_dim"] == 2 * res.model_a.feat_dim and r["eval_nested_ok"] == 1 for r in res.history)
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "log.jsonl").exists()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
    assert res.images_per_second > 0
    assert not res.model_a.training and not res.model_b.training
    # the training labels: every shared id has images, noise is -1
    lab = res.labels
    assert lab.min() >= -1 and set(np.unique(lab[lab >= 0])) == set(range(lab.max() + 1))


def test_target_labels_never_read(target):
    recs, imgs = target
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(recs), generator=g).tolist()
    shuffled = [Record(r.path, recs[perm[i]].pid + 1000, r.camid, r.modality) for i, r in enumerate(recs)]
    cfg = replace(SMOKE, epochs=1)
    a = run_selftrain(cfg, recs, imgs, progress=False)
    b = run_selftrain(cfg, shuffled, imgs, progress=False)
    _same(_weights(a), _weights(b))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_resume_reaches_the_same_weights(smoke, target, tmp_path):
    full, _ = smoke
    recs, imgs = target

    def kill(epoch, row):
        if epoch == 0:
            raise StopTraining

    kw = dict(progress=False, eval_fn=_eval, eval_every=1)
    with pytest.raises(StopTraining):
        run_selftrain(SMOKE, recs, imgs, run_dir=tmp_path, on_epoch_end=kill, **kw)
    resumed = run_selftrain(SMOKE, recs, imgs, run_dir=tmp_path, resume=True, **kw)
    _same(_weights(full), _weights(resumed))
    np.testing.assert_array_equal(full.labels, resumed.labels)
    assert [r["epoch"] for r in resumed.history] == [0, 1]
    assert resumed.history[1]["loss_total"] == pytest.approx(full.history[1]["loss_total"])
    # a finished run resumed returns at once with the same weights
    calls = []
    again = run_selftrain(
        SMOKE, recs, imgs, run_dir=tmp_path, resume=True, progress=False, on_epoch_end=lambda e, r: calls.append(e)
    )
    assert calls == [] and len(again.history) == 2
    _same(_weights(full), _weights(again))
    with pytest.raises(ValueError, match="another config"):
        run_selftrain(replace(SMOKE, eps=0.45), recs, imgs, run_dir=tmp_path, resume=True, progress=False)
    # a run folder started from other weights (e.g. a retrained stage 1) is not resumed
    other = (build_model(SMOKE.arch, width=SMOKE.width), build_model(SMOKE.arch, width=SMOKE.width))
    with pytest.raises(ValueError, match="other initial models"):
        run_selftrain(SMOKE, recs, imgs, run_dir=tmp_path, resume=True, progress=False, init_models=other)


@pytest.mark.parametrize(
    "overrides",
    [
        {"two_models": False},
        {"cluster_mode": "joint"},
        {"match_unequal": "second_round"},
        {"match_unequal": "drop", "match_cost": "cosine"},
        {"mutual_ema": True, "kl_mode": "symmetric"},
        {"epochs": 1, "kmeans_epochs": 1, "iters_per_epoch": 2},
        {"dist_reduction": "sum"},
    ],
    ids=["one_model", "joint", "second_round", "drop", "ema_symkl", "kmeans", "dist_sum"],
)
def test_ablations_run(target, overrides):
    recs, imgs = target
    cfg = replace(SMOKE, **{"epochs": 1, **overrides})
    res = run_selftrain(cfg, recs, imgs, progress=False)
    row = res.history[-1]
    assert len(res.history) == cfg.total_epochs
    assert (res.model_b is None) == (not cfg.two_models)
    assert ("loss_kl_a" in row) == cfg.two_models and ("loss_dist" in row) == cfg.two_models
    assert ("pairs_matched" in row) == (cfg.cluster_mode == "per_modality")
    assert np.isfinite(row["loss_total"])
    if cfg.kmeans_epochs:
        assert [r["phase"] for r in res.history] == ["dbscan", "kmeans"]
        first = res.history[0]
        # k-means K per modality = the last DBSCAN counts; no noise
        assert (row["vis_clusters"], row["ir_clusters"]) == (first["vis_clusters"], first["ir_clusters"])
        assert row["vis_noise_fraction"] == 0 and row["ir_noise_fraction"] == 0
    if cfg.match_unequal == "drop":
        assert row["pairs"] == min(row["vis_clusters"], row["ir_clusters"])
    feats = selftrain_features(res.model_a, res.model_b, cfg.gray_mode, cfg.fusion)(imgs[:5])
    assert feats.shape[0] == 5 and torch.allclose(feats.norm(dim=1), torch.ones(5), atol=1e-5)


def test_tiny_eps_raises_clear_error(target):
    recs, imgs = target
    with pytest.raises(RuntimeError, match=r"epoch 0.*visible.*raise eps \(now 1e-06 for visible\)"):
        run_selftrain(replace(SMOKE, eps=1e-6, min_samples=4), recs, imgs, progress=False)
    # clusters exist but fewer pseudo ids than P = 64 / 4
    with pytest.raises(RuntimeError, match=r"fewer than the P=16"):
        run_selftrain(replace(SMOKE, batch_size=64), recs, imgs, progress=False)


# ----------------------------------------------------------------------------- overrides
VIS = np.array([0, 0, 1, 1, 2, 2, -1, 3])
IR = np.array([0, 0, 1, 1, 2, -1])
PAIRS = np.array([[0, 0], [1, 1], [2, 1], [3, 2]])


def test_apply_overrides_none_is_identity():
    v, i, p = apply_overrides(VIS, IR, PAIRS, None)
    np.testing.assert_array_equal(v, VIS)
    np.testing.assert_array_equal(i, IR)
    np.testing.assert_array_equal(p, PAIRS)


def test_apply_overrides_noise_reject_force():
    vis0, ir0, pairs0 = VIS.copy(), IR.copy(), PAIRS.copy()
    v, i, p = apply_overrides(VIS, IR, PAIRS, {"noise_clusters": {"visible": [2], "infrared": [2]}})
    np.testing.assert_array_equal(v, [0, 0, 1, 1, -1, -1, -1, 3])
    np.testing.assert_array_equal(i, [0, 0, 1, 1, -1, -1])
    np.testing.assert_array_equal(p, [[0, 0], [1, 1]])  # (2, 1) and (3, 2) leave with the noise

    _, _, p = apply_overrides(VIS, IR, PAIRS, {"reject_pairs": [[1, 1]]})
    np.testing.assert_array_equal(p, [[0, 0], [2, 1], [3, 2]])

    # forcing (0, 1) replaces every pair of visible 0 and of infrared 1
    _, _, p = apply_overrides(VIS, IR, PAIRS, {"force_pairs": [[0, 1]]})
    np.testing.assert_array_equal(p, [[0, 1], [3, 2]])

    # all three, in order noise -> reject -> force
    ov = {"noise_clusters": {"visible": [3]}, "reject_pairs": [[0, 0]], "force_pairs": [[2, 0]], "epochs": [0]}
    v, i, p = apply_overrides(VIS, IR, PAIRS, ov)
    np.testing.assert_array_equal(v, [0, 0, 1, 1, 2, 2, -1, -1])
    np.testing.assert_array_equal(p, [[1, 1], [2, 0]])
    # inputs untouched
    np.testing.assert_array_equal(VIS, vis0)
    np.testing.assert_array_equal(IR, ir0)
    np.testing.assert_array_equal(PAIRS, pairs0)


def test_apply_overrides_errors():
    with pytest.raises(ValueError, match=r"unknown keys \['bogus', 'noise'\]"):
        apply_overrides(VIS, IR, PAIRS, {"bogus": 1, "noise": [], "reject_pairs": []})
    with pytest.raises(ValueError, match="unknown modalities"):
        apply_overrides(VIS, IR, PAIRS, {"noise_clusters": {"thermal": [0]}})
    with pytest.raises(ValueError, match="visible cluster 9 does not exist"):
        apply_overrides(VIS, IR, PAIRS, {"noise_clusters": {"visible": [9]}})
    with pytest.raises(ValueError, match=r"\[0, 1\] is not a matched pair"):
        apply_overrides(VIS, IR, PAIRS, {"reject_pairs": [[0, 1]]})
    with pytest.raises(ValueError, match="flags as noise"):
        apply_overrides(VIS, IR, PAIRS, {"noise_clusters": {"infrared": [0]}, "force_pairs": [[0, 0]]})
    with pytest.raises(ValueError, match="not a \\[visible_id, infrared_id\\] pair"):
        apply_overrides(VIS, IR, PAIRS, {"force_pairs": [[0, 1, 2]]})


def test_run_with_overrides(smoke, target):
    recs, imgs = target
    base = smoke[0].history[0]  # same config and seed: the same epoch-0 clustering
    ov = {"noise_clusters": {"visible": [0], "infrared": [0]}, "epochs": [0]}
    res = run_selftrain(replace(SMOKE, epochs=1), recs, imgs, progress=False, label_overrides=ov)
    row = res.history[0]
    assert row["overrides_applied"] and row["vis_clusters"] == base["vis_clusters"]
    assert row["unified_noise_fraction"] > base["unified_noise_fraction"]
    assert row["pairs"] < row["pairs_matched"]
    with pytest.raises(ValueError, match="unknown keys"):
        run_selftrain(SMOKE, recs, imgs, progress=False, label_overrides={"noise": {}})


def test_init_models_are_not_modified(target):
    recs, imgs = target
    torch.manual_seed(1)
    a, b = build_model("resnet18", width=8), build_model("resnet18", width=8)
    a.eval()
    before = {
        k: v.clone()
        for m, pre in ((a, "a"), (b, "b"))
        for k, v in ((f"{pre}.{k}", v) for k, v in m.state_dict().items())
    }
    res = run_selftrain(replace(SMOKE, epochs=1), recs, imgs, init_models=(a, b), progress=False)
    after = {f"{pre}.{k}": v for m, pre in ((a, "a"), (b, "b")) for k, v in m.state_dict().items()}
    _same(before, after)
    assert not a.training and b.training  # modes untouched too
    assert res.model_a is not a and res.model_b is not b
    changed = any(not torch.equal(v, res.model_a.state_dict()[k[2:]]) for k, v in before.items() if k.startswith("a."))
    assert changed  # the copies were trained
    # one model: (F_rg, None)
    one = run_selftrain(replace(SMOKE, epochs=1, two_models=False), recs, imgs, init_models=(a, None), progress=False)
    assert one.model_b is None
    with pytest.raises(ValueError, match="model_b is None"):
        run_selftrain(SMOKE, recs, imgs, init_models=(a, None), progress=False)


def test_cluster_and_match_is_what_training_sees(target):
    """The public epoch step (features + clustering + matching + overrides) reproduces
    the labels and the logged counts of a 1-epoch run from the same models."""
    from cmamlib.data.records import record_arrays
    from cmamlib.training.selftrain import check_overrides, cluster_and_match, selftrain_epoch_features

    recs, imgs = target
    cfg = replace(SMOKE, epochs=1)
    torch.manual_seed(3)
    a, b = build_model("resnet18", width=8), build_model("resnet18", width=8)
    _, cams, is_ir = record_arrays(recs)
    _, _, fused = selftrain_epoch_features(a, b, imgs, cfg, epoch=0)
    el = cluster_and_match(fused, is_ir, cams, cfg, epoch=0)
    res = run_selftrain(cfg, recs, imgs, init_models=(a, b), progress=False)
    row = res.history[0]
    np.testing.assert_array_equal(el.labels, res.labels)
    assert (row["vis_clusters"], row["ir_clusters"], row["pairs"]) == (
        el.raw_vis_labels.max() + 1,
        el.raw_ir_labels.max() + 1,
        len(el.pairs),
    )
    assert el.similarity.shape == (len(el.pairs),) and np.all(np.abs(el.similarity) <= 1 + 1e-9)
    ml = el.modality_labels()
    np.testing.assert_array_equal(ml[~is_ir], el.raw_vis_labels)
    np.testing.assert_array_equal(ml[is_ir], el.raw_ir_labels)
    # overrides for this epoch: the same result as the run with them
    v0 = int(el.pairs[0, 0])
    ov = {"noise_clusters": {"visible": [v0]}, "epochs": [0]}
    check_overrides(ov)
    el2 = cluster_and_match(fused, is_ir, cams, cfg, epoch=0, label_overrides=ov)
    assert el2.overrides_applied and v0 not in el2.pairs[:, 0] and (el2.labels == -1).sum() > (el.labels == -1).sum()
    res2 = run_selftrain(cfg, recs, imgs, init_models=(a, b), progress=False, label_overrides=ov)
    np.testing.assert_array_equal(el2.labels, res2.labels)
    assert not cluster_and_match(fused, is_ir, cams, cfg, epoch=1, label_overrides=ov).overrides_applied


def test_stage2_experiment_upper_bound_must_share_the_input_size():
    """The upper-bound row is meant to see the stage-2 images: another size fails fast,
    naming both sizes, before any run is trained."""
    from cmamlib import calibration, experiments
    from cmamlib.training.supervised import SupervisedConfig

    sup = calibration.model_config("visible_infrared", SupervisedConfig(image_size=(128, 64)))
    with pytest.raises(ValueError, match=r"\(128, 64\).*\(32, 16\)"):
        experiments.stage2_experiment(None, SMOKE, [], [0], None, None, None, supervised_base=sup)


def test_bad_dist_reduction_names_itself():
    with pytest.raises(ValueError, match="dist_reduction='max'"):
        replace(SMOKE, dist_reduction="max").validate()


def test_per_modality_dbscan_parameters(target):
    """``eps`` / ``min_samples`` / ``k1`` / ``k2`` as ``(visible, infrared)`` pairs: each
    modality is clustered with its own values, exactly as a scalar run of that value
    clusters it; pairs are refused in the joint ablation and when malformed."""
    from cmamlib.clustering import camera_centre, pseudo_labels
    from cmamlib.data.records import record_arrays
    from cmamlib.training.selftrain import cluster_and_match, selftrain_epoch_features

    recs, imgs = target
    torch.manual_seed(5)
    a, b = build_model("resnet18", width=8), build_model("resnet18", width=8)
    _, cams, is_ir = record_arrays(recs)
    _, _, fused = selftrain_epoch_features(a, b, imgs, SMOKE, epoch=0)
    cfg = replace(SMOKE, k1=(6, 4), k2=(3, 2), eps=(0.55, 0.45), min_samples=(3, 2))
    cfg.validate()
    assert cfg.dbscan_params("visible") == (6, 3, 0.55, 3) and cfg.dbscan_params("infrared") == (4, 2, 0.45, 2)
    el = cluster_and_match(fused, is_ir, cams, cfg, epoch=0)
    x = camera_centre(fused, cams)
    np.testing.assert_array_equal(el.raw_vis_labels, pseudo_labels(x[~is_ir], 6, 3, 0.55, 3))
    np.testing.assert_array_equal(el.raw_ir_labels, pseudo_labels(x[is_ir], 4, 2, 0.45, 2))
    # a pair of equal values is the scalar
    same = cluster_and_match(fused, is_ir, cams, replace(SMOKE, eps=(SMOKE.eps, SMOKE.eps)), epoch=0)
    np.testing.assert_array_equal(same.labels, cluster_and_match(fused, is_ir, cams, SMOKE, epoch=0).labels)
    with pytest.raises(
        ValueError, match=r"eps=\(0.55, 0.45\): a \(visible, infrared\) pair needs cluster_mode='per_modality'"
    ):
        replace(cfg, cluster_mode="joint", k1=6, k2=3, min_samples=2).validate()
    replace(SMOKE, cluster_mode="joint", eps=(0.5, 0.5)).validate()  # equal values are fine
    with pytest.raises(
        ValueError, match=r"min_samples=\(1, 2, 3\): expected one value or a \(visible, infrared\) pair"
    ):
        replace(SMOKE, min_samples=(1, 2, 3)).validate()
    with pytest.raises(ValueError, match=r"eps=\(0.5, 0.0\): expected > 0"):
        replace(SMOKE, eps=(0.5, 0.0)).validate()
    # the message of an all-noise modality names that modality's values
    with pytest.raises(
        RuntimeError,
        match=r"infrared images \(all noise\); raise eps \(now 0.5 for infrared\) or lower "
        r"min_samples \(now 100000 for infrared\)",
    ):
        cluster_and_match(fused, is_ir, cams, replace(SMOKE, min_samples=(2, 100_000)), epoch=0)
