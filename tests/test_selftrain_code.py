"""Stage 2's code-following options (docs/method.md, "Where the defaults still differ from
the code"): the one switch and its defaults, backbone-only carry-over, the undetached
summed KL, the summed distance term, the other-camera sampler, Ward on raw centroids,
A's pre-BNNeck test feature and the experiments' rows; each against hand formulas or
plain loops on tiny tensors, plus smoke-scale runs."""

from __future__ import annotations

import itertools
import sys
import types
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage
from test_selftrain import SMOKE as _SELFTRAIN_SMOKE
from test_selftrain import target  # noqa: F401  (a fixture)

from cmamlib import experiments
from cmamlib.data.samplers import OtherCameraSampler
from cmamlib.features import extract_features
from cmamlib.labeling import cluster_centroids, match_clusters
from cmamlib.losses import DistanceMatrixLoss, SymmetricKL
from cmamlib.memory import ClusterMemory
from cmamlib.models import build_model
from cmamlib.presets import load_config
from cmamlib.training import selftrain_config
from cmamlib.training.selftrain import (
    CODE_DEFAULTS,
    EARLIER_DEFAULTS,
    SelfTrainConfig,
    carry_over,
    cluster_and_match,
    run_selftrain,
    selftrain_features,
)
from cmamlib.training.selftrain_step import _kl, _step_losses

SMOKE = replace(_SELFTRAIN_SMOKE, epochs=1)


# ----------------------------------------------------------------------------- the switch


def test_defaults_are_the_codes_and_the_earlier_ones_stay_options():
    assert selftrain_config.FOLLOW_CODE_DEFAULTS is True
    cfg = SelfTrainConfig()
    assert {k: getattr(cfg, k) for k in CODE_DEFAULTS} == CODE_DEFAULTS
    assert set(CODE_DEFAULTS) == set(EARLIER_DEFAULTS)
    assert cfg.sampler == "cross_modality"
    cfg.validate()
    # a checkpoint written before these fields ran the old behaviour: not resumable now
    assert set(cfg.resume_strict_fields()) == {"init_carry", "kl_detach", "kl_reduction", "ward_space"}
    earlier = SelfTrainConfig(**EARLIER_DEFAULTS, epochs=2)
    assert {k: getattr(earlier, k) for k in EARLIER_DEFAULTS} == EARLIER_DEFAULTS and earlier.epochs == 2
    earlier.validate()
    code = SelfTrainConfig.authors_code(epochs=2)
    assert {k: getattr(code, k) for k in CODE_DEFAULTS} == CODE_DEFAULTS and code.epochs == 2


def test_the_switch_line_off_gives_the_earlier_defaults(monkeypatch):
    """The one switch, ``FOLLOW_CODE_DEFAULTS: bool = True`` in
    cmamlib/training/selftrain_config.py, present exactly once; off, the earlier defaults."""
    src = Path(selftrain_config.__file__).read_text()
    line = "FOLLOW_CODE_DEFAULTS: bool = True"
    assert src.count(line) == 1
    name = "cmamlib.training._selftrain_config_switched_off"
    mod = types.ModuleType(name)
    mod.__package__ = "cmamlib.training"
    mod.__file__ = selftrain_config.__file__
    monkeypatch.setitem(sys.modules, name, mod)
    exec(compile(src.replace(line, "FOLLOW_CODE_DEFAULTS: bool = False"), mod.__file__, "exec"), mod.__dict__)
    cfg = mod.SelfTrainConfig()
    assert {k: getattr(cfg, k) for k in EARLIER_DEFAULTS} == EARLIER_DEFAULTS
    cfg.validate()
    assert cfg.resume_strict_fields() == ()


@pytest.mark.parametrize(
    "bad",
    [
        {"init_carry": "head"},
        {"kl_reduction": "mean"},
        {"ward_space": "cosine"},
        {"sampler": "random"},
        {"test_feature": "b"},
        {"epochs": 0},
        {"epochs": 0, "kmeans_epochs": 2},
        {"epochs": -1, "kmeans_epochs": 2, "kmeans_k": 4},
        {"num_instances": 3, "batch_size": 15},
    ],
)
def test_validate_rejects(bad):
    with pytest.raises(ValueError):
        replace(SMOKE, **bad).validate()


def test_validate_accepts_kmeans_only_and_odd_k_with_other_cameras():
    replace(SMOKE, epochs=0, kmeans_epochs=2, kmeans_k=(5, 4)).validate()
    replace(SMOKE, sampler="other_cameras", num_instances=3, batch_size=15).validate()


# ----------------------------------------------------------------------------- carry-over


def _trained_like(seed=0):
    torch.manual_seed(seed)
    m = build_model("resnet18", width=8)
    with torch.no_grad():
        m.pool.p.fill_(4.5)
        m.neck.weight.uniform_(0.5, 2.0)
        m.neck.running_mean.normal_()
        m.neck.running_var.uniform_(0.5, 3.0)
        m.neck.num_batches_tracked.fill_(17)
    return m


def test_carry_over_backbone_resets_gem_and_bnneck_only():
    src = _trained_like()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    out = carry_over(src, "backbone")
    for k, v in src.state_dict().items():  # the input is untouched
        assert torch.equal(v, before[k]), k
    fresh = build_model("resnet18", width=8)
    for k, v in out.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, before[k]), k
        else:  # pool.p, neck.*: as a freshly built model
            assert torch.equal(v, fresh.state_dict()[k]), k
    assert float(out.pool.p.detach()) == 3.0 and not out.neck.bias.requires_grad
    same = carry_over(src, "all")
    for k, v in same.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert same is not src
    with pytest.raises(ValueError):
        carry_over(src, "head")


def test_run_selftrain_carries_the_backbone_only(target, monkeypatch):
    recs, imgs = target
    a, b = _trained_like(0), _trained_like(1)
    seen = []
    import cmamlib.training.selftrain as st

    orig = st.carry_over
    monkeypatch.setattr(st, "carry_over", lambda m, c: seen.append(c) or orig(m, c))
    res = run_selftrain(replace(SMOKE, init_carry="backbone"), recs, imgs, init_models=(a, b), progress=False)
    assert seen == ["backbone", "backbone"]
    assert np.isfinite(res.history[-1]["loss_total"])
    assert float(a.pool.p.detach()) == 4.5  # stage 1's models are not modified


# ----------------------------------------------------------------------------- mutual terms


def _kl_loop(student, teacher):
    """sum_b sum_c q_bc (log q_bc - log p_bc), q = softmax(teacher), p = softmax(student)."""
    total = 0.0
    for s, t in zip(student, teacher):
        q, p = torch.softmax(t, 0), torch.softmax(s, 0)
        total = total + sum(q[c] * (torch.log(q[c]) - torch.log(p[c])) for c in range(len(q)))
    return total


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_plain_kl_against_a_loop(detach, reduction):
    torch.manual_seed(0)
    s = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    got = _kl(s, t, "plain", SymmetricKL(), detach=detach, reduction=reduction)
    want = _kl_loop(s.float(), t.float()) / (5 if reduction == "batchmean" else 1)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    if detach:
        assert t.grad is None
    else:  # the teacher's gradient is the loop's
        s2, t2 = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
        (_kl_loop(s2, t2) / (5 if reduction == "batchmean" else 1)).backward()
        torch.testing.assert_close(t.grad, t2.grad, rtol=1e-4, atol=1e-6)


def test_symmetric_kl_undetached_gives_the_teacher_gradients():
    torch.manual_seed(1)
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6, requires_grad=True)
    loss = SymmetricKL(reduction="sum", detach_teacher=False)(s, t)
    want = 0.5 * (_kl_loop(s, t) + _kl_loop(t, s))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    t.grad = None
    SymmetricKL(reduction="sum")(s, t).backward()
    assert t.grad is None


def test_distance_sum_against_a_loop():
    torch.manual_seed(2)
    a, b = torch.randn(5, 3), torch.randn(5, 4)
    za, zb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    want = sum((torch.dist(za[i], za[j]) - torch.dist(zb[i], zb[j])) ** 2 for i in range(5) for j in range(5)).item()
    assert DistanceMatrixLoss(reduction="sum")(a, b).item() == pytest.approx(want, abs=1e-4)
    assert DistanceMatrixLoss(reduction="mean")(a, b).item() == pytest.approx(want / 25, abs=1e-5)


@pytest.mark.parametrize("detach", [True, False])
def test_step_kl_reaches_both_models_only_undetached(detach):
    torch.manual_seed(3)
    cfg = replace(SMOKE, kl_detach=detach, kl_reduction="sum", dist_weight=0.0)
    ma, mb = build_model("resnet18", width=8), build_model("resnet18", width=8)
    x, xg = torch.randn(8, 3, 32, 16), torch.randn(8, 3, 32, 16)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    mem_a, mem_b = ClusterMemory(ma.feat_dim, 4, 0.05, 0.2), ClusterMemory(mb.feat_dim, 4, 0.05, 0.2)
    mem_a.reset(torch.randn(8, ma.feat_dim), y)
    mem_b.reset(torch.randn(8, mb.feat_dim), y)
    sym = SymmetricKL(reduction="sum", detach_teacher=detach)
    terms, _ = _step_losses(cfg, x, xg, y, ma, mb, mem_a, mem_b, None, None, sym, DistanceMatrixLoss(), "cpu")
    assert set(terms) == {"mem_a", "mem_b", "kl_a", "kl_b"} and terms["kl_a"] > 0
    terms["kl_a"].backward()  # A learns from B: B gets gradients only undetached
    grad_b = sum(float(p.grad.abs().sum()) for p in mb.backbone.parameters() if p.grad is not None)
    grad_a = sum(float(p.grad.abs().sum()) for p in ma.backbone.parameters() if p.grad is not None)
    assert grad_a > 0
    assert (grad_b > 0) == (not detach)


# ----------------------------------------------------------------------------- sampler


def _sampler_case():
    # id 0: cams 1, 1, 2, 3 ; id 1: cam 4 only (3 images) ; id 2: one image ; id 3: cams 1 x5 + 2 x5 ; noise
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, -1, -1])
    cams = np.array([1, 1, 2, 3, 4, 4, 4, 5, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 1, 2])
    return labels, cams


@pytest.mark.parametrize("per_epoch", [None, 7])
def test_other_camera_sampler_draws_as_the_code(per_epoch):
    labels, cams = _sampler_case()
    k = 4
    s = OtherCameraSampler(labels, cams, num_instances=k, batch_size=8, seed=0, batches_per_epoch=per_epoch)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s.batches())
        assert len(batches) == (per_epoch if per_epoch else 4 // 2)  # one chunk per identity and pass
        for b in batches:
            chunks = [b[i : i + k] for i in range(0, len(b), k)]
            assert len({int(labels[c[0]]) for c in chunks}) == len(chunks)  # P distinct ids
            for c in chunks:
                pid = labels[c[0]]
                assert pid >= 0 and all(labels[j] == pid for j in c)
                anchor, rest = c[0], c[1:]
                mine = np.flatnonzero(labels == pid)
                other_cams = [j for j in mine if cams[j] != cams[anchor]]
                if other_cams:
                    assert all(cams[j] != cams[anchor] for j in rest)
                    if len(other_cams) >= k:  # fast-reid: without replacement then
                        assert len(set(rest)) == len(rest)
                elif len(mine) > 1:
                    assert all(j != anchor for j in rest)
                else:
                    assert rest == [anchor] * (k - 1)
    s.set_epoch(1)
    again = OtherCameraSampler(labels, cams, num_instances=k, batch_size=8, seed=0, batches_per_epoch=per_epoch)
    again.set_epoch(1)
    assert list(again.batches()) == list(s.batches())


def test_other_camera_sampler_rejects():
    labels, cams = _sampler_case()
    with pytest.raises(ValueError):
        OtherCameraSampler(labels, cams[:-1], num_instances=4, batch_size=8)
    with pytest.raises(ValueError):
        OtherCameraSampler(labels, cams, num_instances=1, batch_size=8)


# ----------------------------------------------------------------------------- Ward on raw centroids


def _brute_force_raw_ward(feats_big, lab_big, small_centroids):
    """The code's merge, from the samples: Ward (scipy) on the raw centroids, a merged
    group's centroid the mean of its samples, then the cheapest perfect matching of the
    L2-normalised centroids over all permutations (squared Euclidean)."""
    ids = np.unique(lab_big)
    cent = np.stack([feats_big[lab_big == i].mean(0) for i in ids])
    k = len(small_centroids)
    g = fcluster(linkage(cent, method="ward"), t=k, criterion="maxclust")
    _, g = np.unique(g, return_inverse=True)
    merged = np.stack([feats_big[np.isin(lab_big, ids[g == j])].mean(0) for j in range(k)])
    mn = merged / np.linalg.norm(merged, axis=1, keepdims=True)
    sn = small_centroids / np.linalg.norm(small_centroids, axis=1, keepdims=True)
    best, best_perm = np.inf, None
    for perm in itertools.permutations(range(k)):
        c = sum(((mn[j] - sn[perm[j]]) ** 2).sum() for j in range(k))
        if c < best:
            best, best_perm = c, perm
    return {(int(i), int(best_perm[g[n]])) for n, i in enumerate(ids)}, best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("vis_larger", [True, False])
def test_ward_raw_against_brute_force(seed, vis_larger):
    rng = np.random.default_rng(seed)
    n_big, n_small, d = 6, 3, 4
    lab_big = np.repeat(np.arange(n_big), rng.integers(1, 6, n_big))
    feats_big = rng.normal(size=(len(lab_big), d)) * rng.uniform(0.2, 3.0, (len(lab_big), 1))
    small = rng.normal(size=(n_small, d))
    cent, _ = cluster_centroids(feats_big, lab_big)
    counts = np.bincount(lab_big)
    want, want_cost = _brute_force_raw_ward(feats_big, lab_big, small)
    if vis_larger:
        m = match_clusters(cent, small, ward_space="raw", vis_counts=counts)
        got = {(int(a), int(b)) for a, b in m.pairs}
    else:
        m = match_clusters(small, cent, ward_space="raw", ir_counts=counts)
        got = {(int(b), int(a)) for a, b in m.pairs}
    assert got == want
    assert m.cost == pytest.approx(want_cost, abs=1e-9)


def test_ward_l2_is_the_default_and_counts_are_checked():
    rng = np.random.default_rng(0)
    v, r = rng.normal(size=(5, 3)), rng.normal(size=(3, 3))
    np.testing.assert_array_equal(match_clusters(v, r).pairs, match_clusters(v, r, ward_space="l2").pairs)
    with pytest.raises(ValueError):
        match_clusters(v, r, ward_space="raw", vis_counts=np.ones(4))
    with pytest.raises(ValueError):
        match_clusters(v, r, ward_space="other")


def test_cluster_and_match_passes_ward_space_and_cluster_sizes(monkeypatch):
    import cmamlib.training.pseudo_labels as pl

    seen = {}
    orig = pl.match_clusters

    def spy(*args, **kw):
        seen.update(space=args[5], vis=kw["vis_counts"], ir=kw["ir_counts"])
        return orig(*args, **kw)

    monkeypatch.setattr(pl, "match_clusters", spy)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 8)) * 3
    x = np.concatenate([centres[i % 6] + 0.05 * rng.normal(size=(1, 8)) for i in range(48)]).astype(np.float32)
    is_ir = np.arange(48) >= 30
    cfg = replace(SMOKE, ward_space="raw", camera_centering=False, k1=4, k2=2, eps=0.5, min_samples=2)
    el = cluster_and_match(x, is_ir, None, cfg)
    assert seen["space"] == "raw"
    np.testing.assert_array_equal(
        seen["vis"], np.unique(el.raw_vis_labels[el.raw_vis_labels >= 0], return_counts=True)[1]
    )
    np.testing.assert_array_equal(seen["ir"], np.unique(el.raw_ir_labels[el.raw_ir_labels >= 0], return_counts=True)[1])


# ----------------------------------------------------------------------------- test feature


def _pre_bn_hand(model, x):
    with torch.no_grad():
        f = model.pool(model.backbone.forward_features(x))
        g = model.pool(model.backbone.forward_features(torch.flip(x, dims=[3])))
    return F.normalize((f + g) / 2, dim=1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pre_bnneck_feature_is_the_flip_averaged_gem(mode):
    torch.manual_seed(4)
    m = _trained_like()
    getattr(m, mode)()
    x = torch.randn(5, 3, 32, 16)
    got = extract_features(m, [x], feature="pre_bnneck", progress=False)
    m.eval()
    want = _pre_bn_hand(m, x)
    getattr(m, mode)()
    assert m.training == (mode == "train")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    post = extract_features(m, [x], progress=False)
    assert (post - got).abs().max() > 1e-3  # the BNNeck (trained-like statistics) changes it
    assert m.training == (mode == "train")  # extraction restores the mode it found
    with pytest.raises(ValueError):
        extract_features(m, [x], feature="other", progress=False)


def test_model_and_selftrain_features_take_the_pre_bnneck_option():
    torch.manual_seed(5)
    a, b = _trained_like(0).eval(), _trained_like(1).eval()
    imgs = torch.randint(0, 256, (4, 3, 32, 16), dtype=torch.uint8)
    fa = experiments.model_features(a, feature="pre_bnneck")(imgs)
    fs = selftrain_features(a, None, feature="pre_bnneck")(imgs)
    torch.testing.assert_close(fa, fs)
    from cmamlib.data.loading import iterate_batches

    (x,) = list(iterate_batches(imgs, 64, device="cpu"))  # the normalised batch
    torch.testing.assert_close(fa, _pre_bn_hand(a, x), rtol=1e-4, atol=1e-5)
    fused = selftrain_features(a, b, feature="pre_bnneck")(imgs)
    assert fused.shape == (4, a.feat_dim + b.feat_dim)


def _fake_res():
    torch.manual_seed(6)
    return SimpleNamespace(
        model_a=_trained_like(0).eval(), model_b=_trained_like(1).eval(), images_per_second=1.0, history=[]
    )


@pytest.mark.parametrize("test_feature", ["fused", "a_pre_bnneck"])
def test_stage2_feature_fns_put_the_reported_one_first(test_feature):
    res = _fake_res()
    cfg = replace(SMOKE, test_feature=test_feature)
    fns = experiments.stage2_feature_fns(res, cfg)
    assert list(fns)[0] == test_feature and set(fns) == {"fused", "a_pre_bnneck"}
    imgs = torch.randint(0, 256, (3, 3, 32, 16), dtype=torch.uint8)
    torch.testing.assert_close(
        fns["a_pre_bnneck"](imgs), selftrain_features(res.model_a, None, feature="pre_bnneck")(imgs)
    )
    torch.testing.assert_close(fns["fused"](imgs), selftrain_features(res.model_a, res.model_b)(imgs))


def _fake_metrics(keys):
    def row(fn, *args, **kw):
        v = float(fn(IMGS).sum())  # a function of the feature, different per feature
        return {k: v for k in keys}

    return row


IMGS = torch.randint(0, 256, (3, 3, 32, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("test_feature", ["fused", "a_pre_bnneck"])
def test_stage2_experiment_reports_the_test_feature_and_the_other_under_a_suffix(monkeypatch, test_feature):
    res = _fake_res()
    cfg = replace(SMOKE, test_feature=test_feature)
    monkeypatch.setattr(experiments, "stage2_run", lambda *a, **k: (res, replace(cfg, seed=a[3])))
    monkeypatch.setattr(experiments, "sysu_row", _fake_metrics(experiments.STAGE2_KEYS))
    out = experiments.stage2_experiment(None, cfg, ["full"], [0, 1], None, None, None, progress=False)
    fns = experiments.stage2_feature_fns(res, cfg)
    other = "a_pre_bnneck" if test_feature == "fused" else "fused"
    sfx = experiments.FEATURE_SUFFIX[other]
    row = out["per_seed"]["full"][0]
    assert row["all_mAP"] == pytest.approx(float(fns[test_feature](IMGS).sum()))
    assert row[f"all_mAP_{sfx}"] == pytest.approx(float(fns[other](IMGS).sum()))
    assert "A_all_mAP" in row  # A's post-BNNeck feature alone, as before
    table = out["rows"][0]
    assert table["all_mAP"] == pytest.approx(row["all_mAP"]) and f"all_mAP_{sfx}_std" in table
    assert out["test_feature"] == test_feature


@pytest.mark.parametrize("test_feature", ["fused", "a_pre_bnneck"])
def test_regdb_experiment_reports_the_test_feature_and_the_other_under_a_suffix(monkeypatch, test_feature):
    res = _fake_res()
    cfg = replace(SMOKE, test_feature=test_feature)
    monkeypatch.setattr(experiments, "load_regdb", lambda root, i, size, progress=False: SimpleNamespace(train=None))
    monkeypatch.setattr(experiments, "stage2_run", lambda *a, **k: (res, cfg))
    monkeypatch.setattr(experiments, "regdb_row", _fake_metrics(experiments.REGDB_KEYS))
    out = experiments.regdb_experiment(None, cfg, ["full"], [0], "x", None, None, splits=(1, 2), progress=False)
    fns = experiments.stage2_feature_fns(res, cfg)
    other = "a_pre_bnneck" if test_feature == "fused" else "fused"
    sfx = experiments.FEATURE_SUFFIX[other]
    split = out["per_split"]["full"][0][0]
    assert split["v2t_mAP"] == pytest.approx(float(fns[test_feature](IMGS).sum()))
    assert split[f"v2t_mAP_{sfx}"] == pytest.approx(float(fns[other](IMGS).sum()))
    assert out["rows"][0][f"t2v_R1_{sfx}"] == pytest.approx(float(fns[other](IMGS).sum()))
    assert out["test_feature"] == test_feature


# ----------------------------------------------------------------------------- presets and runs


def test_paper_presets_run_the_kmeans_phase():
    sysu = load_config("paper-sysu-mm01").stage2
    assert (sysu.epochs, sysu.kmeans_epochs, sysu.kmeans_k) == (40, 40, None)
    assert load_config("paper-sysu-mm02").stage2.kmeans_epochs == 50
    reg = load_config("paper-regdb").stage2
    assert (reg.epochs, reg.kmeans_epochs, reg.iters_per_epoch, reg.kmeans_k) == (0, 60, 200, 400)
    assert reg.total_epochs * reg.iters_per_epoch == 12000
    assert load_config("paper-llcm").stage2.kmeans_epochs == 0
    s2 = load_config("smoke", ["stage2.sampler=other_cameras", "stage2.init_carry=backbone"]).stage2
    assert (s2.sampler, s2.init_carry) == ("other_cameras", "backbone")


def test_authors_code_run_with_the_code_sampler_kmeans_only(target):
    recs, imgs = target
    init = (_trained_like(0), _trained_like(1))
    cfg = SelfTrainConfig.authors_code(
        **{
            **{k: getattr(SMOKE, k) for k in ("width", "image_size", "batch_size", "num_instances", "device")},
            "epochs": 0,
            "kmeans_epochs": 2,
            "kmeans_k": (8, 6),
            "iters_per_epoch": 3,
            "sampler": "other_cameras",
            "eval_batch_size": 64,
        }
    )
    res = run_selftrain(cfg, recs, imgs, init_models=init, progress=False)
    assert [r["phase"] for r in res.history] == ["kmeans", "kmeans"]
    row = res.history[-1]
    assert (row["vis_clusters"], row["ir_clusters"]) == (8, 6)
    for k in ("loss_mem_a", "loss_mem_b", "loss_kl_a", "loss_kl_b", "loss_dist", "loss_total"):
        assert np.isfinite(row[k]), k


def test_legacy_and_code_ward_runs(target):
    recs, imgs = target
    for space in ("l2", "raw"):
        res = run_selftrain(replace(SMOKE, ward_space=space), recs, imgs, progress=False)
        assert np.isfinite(res.history[-1]["loss_total"])
