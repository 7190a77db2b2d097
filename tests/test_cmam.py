"""Stage 1 (CMAM) at smoke scale: runs, never reads source labels, resumes exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cmamlib.data import Record, read_market1501
from cmamlib.data.loading import load_images
from cmamlib.training.cmam import VARIANTS, CMAMConfig, run_cmam, variant_config
from cmamlib.training.loop import StopTraining
from cmamlib.utils import load_checkpoint

#: Memory mode (per-epoch re-clustering, the earlier identity term): these tests are about
#: its clustering, labels and resume; classifier mode (the default) has its own tests below.
SMOKE = CMAMConfig(
    identity_loss="memory",
    width=8,
    image_size=(32, 16),
    batch_size=16,
    num_instances=4,
    epochs=2,
    k1=6,
    k2=3,
    eps=0.5,
    min_samples=2,
    eval_batch_size=64,
    kl_start_fraction=0.5,
    device="cpu",
    iters_per_epoch=4,
)


@pytest.fixture(scope="module")
def source(tiny_data):
    recs = read_market1501(tiny_data / "Market-1501-synth", "train")
    return recs, load_images(recs, SMOKE.image_size, progress=False)


def _weights(res):
    sd = {f"rg.{k}": v for k, v in res.model_rg.state_dict().items()}
    if res.model_g is not None:
        sd.update({f"g.{k}": v for k, v in res.model_g.state_dict().items()})
    return sd


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cmam_smoke_logs_and_losses(source, tmp_path):
    recs, imgs = source
    res = run_cmam(SMOKE, recs, imgs, run_dir=tmp_path, progress=False)
    assert len(res.history) == 2
    first, last = res.history
    for key in ("loss_mem_rg_rgb", "loss_mem_rg_gray", "loss_mem_g", "loss_rg2g", "loss_g2rg"):
        assert key in last and last[key] == last[key]  # present and not NaN
    assert not first["kl_on"] and last["kl_on"]
    assert first["labels_clusters"] >= 4 and -1 <= first["labels_ari"] <= 1 and 0 <= first["labels_purity"] <= 1
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "log.jsonl").exists()
    assert res.images_per_second > 0


def test_source_labels_never_read(source):
    recs, imgs = source
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(recs), generator=g).tolist()
    shuffled = [Record(r.path, recs[perm[i]].pid + 1000, r.camid, r.modality) for i, r in enumerate(recs)]
    cfg = replace(SMOKE, epochs=1)
    a = run_cmam(cfg, recs, imgs, progress=False)
    b = run_cmam(cfg, shuffled, imgs, progress=False)
    _same(_weights(a), _weights(b))


def test_resume_reaches_the_same_weights(source, tmp_path):
    recs, imgs = source
    full = run_cmam(SMOKE, recs, imgs, run_dir=tmp_path / "full", progress=False)

    def kill(epoch, row):
        if epoch == 0:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_cmam(SMOKE, recs, imgs, run_dir=tmp_path / "killed", progress=False, on_epoch_end=kill)
    resumed = run_cmam(SMOKE, recs, imgs, run_dir=tmp_path / "killed", resume=True, progress=False)
    _same(_weights(full), _weights(resumed))
    assert [r["epoch"] for r in resumed.history] == [0, 1]
    assert resumed.history[1]["loss_mem_rg_rgb"] == pytest.approx(full.history[1]["loss_mem_rg_rgb"])


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_run(source, name):
    recs, imgs = source
    cfg = replace(variant_config(SMOKE, name), epochs=1, kl_start_fraction=0.0)
    res = run_cmam(cfg, recs, imgs, progress=False)
    row = res.history[0]
    assert (res.model_g is None) == (not cfg.use_aux_gray)
    assert ("loss_g2rgb" in row) == cfg.symmetric
    assert ("loss_tie" in row) == cfg.tie_rgb_to_gray
    assert ("loss_mem_rg_gray" in row) == cfg.use_gray_view


def test_per_network_labels_and_ema(source):
    recs, imgs = source
    cfg = replace(SMOKE, epochs=1, label_space="per_network", ema=True, kl_start_fraction=0.0)
    res = run_cmam(cfg, recs, imgs, progress=False)
    assert "labels_g_clusters" in res.history[0]
    assert not res.history[0]["kl_on"]  # KL needs one label set for both networks


def test_bad_config_and_no_clusters(source):
    recs, imgs = source
    with pytest.raises(ValueError, match="use_aux_gray"):
        run_cmam(replace(SMOKE, use_gray_view=False), recs, imgs, progress=False)
    with pytest.raises(RuntimeError, match="raise eps"):
        run_cmam(replace(SMOKE, eps=1e-6, min_samples=4), recs, imgs, progress=False)


def test_shared_init_starts_f_g_as_a_copy_of_f_rg(source, monkeypatch):
    """shared_init (default): F_g starts with F_rg's initial weights, as two copies of the
    same ImageNet file in the authors' code; False draws F_g independently."""
    from cmamlib.training import cmam as cmam_mod

    starts = []

    def stop_at_first_epoch(epoch, row):
        raise StopTraining

    real = cmam_mod.make_optimizer

    def spy(params, lr, wd):  # called once, right after both networks are built
        params = list(params)
        starts.append([p.detach().clone() for p in params])
        return real(params, lr, wd)

    monkeypatch.setattr(cmam_mod, "make_optimizer", spy)
    recs, imgs = source
    for shared in (True, False):
        with pytest.raises(StopTraining):
            run_cmam(replace(SMOKE, shared_init=shared), recs, imgs, progress=False, on_epoch_end=stop_at_first_epoch)
    for params, shared in zip(starts, (True, False)):
        half = len(params) // 2
        same = all(torch.equal(a, b) for a, b in zip(params[:half], params[half:]))
        assert same == shared
    assert CMAMConfig().shared_init and VARIANTS["cmam_independent_init"] == {"shared_init": False}


def test_a_run_from_before_shared_init_is_not_resumed_as_shared(source, tmp_path):
    """shared_init changed the behaviour, so a checkpoint without the field (written
    with independent draws) is another run, not the default's."""
    recs, imgs = source
    run_cmam(replace(SMOKE, epochs=1), recs, imgs, run_dir=tmp_path, progress=False)
    ck = tmp_path / "checkpoint.pt"
    state = load_checkpoint(ck)
    del state["config"]["shared_init"]
    torch.save(state, ck)
    with pytest.raises(ValueError, match="shared_init"):
        run_cmam(replace(SMOKE, epochs=1), recs, imgs, run_dir=tmp_path, resume=True, progress=False)
    # without F_g the field changes nothing: such an old run resumes
    one_net = replace(SMOKE, epochs=1, use_aux_gray=False)
    run_cmam(one_net, recs, imgs, run_dir=tmp_path / "one_net", progress=False)
    ck = tmp_path / "one_net" / "checkpoint.pt"
    state = load_checkpoint(ck)
    del state["config"]["shared_init"]
    torch.save(state, ck)
    run_cmam(one_net, recs, imgs, run_dir=tmp_path / "one_net", resume=True, progress=False)


def test_label_file_labels_every_epoch_and_errors(source, tmp_path):
    """label_file (the authors' PPLR labels): read once, used by every branch and epoch
    instead of re-clustering; bad files fail naming the file and line."""
    from cmamlib.data.label_files import read_label_file, write_label_file

    recs, imgs = source
    pids = [r.pid for r in recs]
    given = [p if i % 7 else -1 for i, p in enumerate(pids)]  # some noise
    path = write_label_file(tmp_path / "labels.csv", recs, given)
    labels = read_label_file(path, recs)
    # plain-loop oracle: first-appearance renumbering, -1 kept
    seen, want = {}, []
    for y in given:
        want.append(-1 if y < 0 else seen.setdefault(y, len(seen)))
    assert labels.tolist() == want
    res = run_cmam(replace(SMOKE, label_file=str(path)), recs, imgs, run_dir=tmp_path / "run", progress=False)
    assert res.labels.tolist() == want
    write_label_file(path, recs, pids)  # the file changes under a finished run: not the same run
    with pytest.raises(ValueError, match="label_file .* changed"):
        run_cmam(
            replace(SMOKE, label_file=str(path)), recs, imgs, run_dir=tmp_path / "run", resume=True, progress=False
        )
    for row in res.history:
        assert row["labels_clusters"] == len(seen) and row["label_file_sha256"]
        assert row["labels_purity"] == pytest.approx(1.0)
    assert res.history[-1]["kl_on"]
    # paths relative to the dataset root match too; rows in any order
    rel = tmp_path / "rel.csv"
    rel.write_text(
        "path,label\n"
        + "".join(f"bounding_box_train/{r.path.rsplit('/', 1)[-1]},{y}\n" for r, y in reversed(list(zip(recs, given))))
    )
    assert read_label_file(rel, recs).tolist() != [] and (read_label_file(rel, recs) >= 0).sum() == sum(
        y >= 0 for y in given
    )
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        run_cmam(replace(SMOKE, label_file=str(tmp_path / "nope.csv")), recs, imgs, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,id\n")
    with pytest.raises(ValueError, match="header"):
        read_label_file(bad, recs)
    bad.write_text("path,label\n" + f"{recs[0].path.rsplit('/', 1)[-1]},x\n")
    with pytest.raises(ValueError, match="line 2.*not an integer"):
        read_label_file(bad, recs)
    bad.write_text("path,label\nghost.jpg,3\n")
    with pytest.raises(ValueError, match="ghost.jpg.*matches no source image"):
        read_label_file(bad, recs)
    bad.write_text("path,label\n" + f"{recs[0].path.rsplit('/', 1)[-1]},1\n")
    with pytest.raises(ValueError, match=f"{len(recs) - 1} of {len(recs)} source images have no row"):
        read_label_file(bad, recs)
    bad.write_text("path,label\n" + 2 * f"{recs[0].path.rsplit('/', 1)[-1]},1\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_label_file(bad, recs)


def test_view_forward_separate_normalises_each_view_alone(source):
    """view_forward="separate" (the authors' code: F_rg's two views in two forwards, so
    BatchNorm takes each view's own batch statistics) trains and differs from the one
    concatenated forward; a bad value names itself."""
    recs, imgs = source
    cfg = replace(SMOKE, epochs=1)
    a = run_cmam(replace(cfg, view_forward="concat"), recs, imgs, progress=False)
    b = run_cmam(replace(cfg, view_forward="separate"), recs, imgs, progress=False)
    assert b.history[0]["loss_mem_rg_gray"] == b.history[0]["loss_mem_rg_gray"]
    assert b.history[0]["loss_mem_rg_rgb"] != pytest.approx(a.history[0]["loss_mem_rg_rgb"], rel=1e-6)
    with pytest.raises(ValueError, match="view_forward='both'"):
        run_cmam(replace(cfg, view_forward="both"), recs, imgs, progress=False)


# ---- the authors' code: classifier identity term, two runs, source labels -----------------


def _code(tmp_path, recs, **kw):
    """SMOKE with the code-following values and a label file of the true ids with some noise."""
    from cmamlib.data.label_files import write_label_file
    from cmamlib.training.cmam import CODE_DEFAULTS

    path = write_label_file(tmp_path / "labels.csv", recs, [r.pid if i % 9 else -1 for i, r in enumerate(recs)])
    return replace(SMOKE, **{**CODE_DEFAULTS, "label_file": str(path), **kw})


def test_classifier_mode_trains_on_fixed_labels_without_clustering(source, tmp_path, monkeypatch):

    recs, imgs = source
    cfg = _code(tmp_path, recs)

    def no_clustering(*a, **k):
        raise AssertionError("classifier mode must not cluster")

    from cmamlib.training import cmam_memory

    monkeypatch.setattr(cmam_memory, "pseudo_labels", no_clustering)
    res = run_cmam(cfg, recs, imgs, run_dir=tmp_path / "run", progress=False)
    first, last = res.history
    for key in ("loss_ce_rg_rgb", "loss_ce_rg_gray", "loss_ce_g", "loss_tri_rg_rgb", "loss_tri_g", "loss_rg2g"):
        assert key in last and last[key] == last[key]
    assert "loss_mem_rg_rgb" not in last and first["phase"] == "fixed_labels"
    assert (first["run"], last["run"]) == (1, 2) and not first["kl_on"] and last["kl_on"]
    n_cls = len({r.pid for i, r in enumerate(recs) if i % 9})
    assert res.classifier_rg.weight.shape == (n_cls, res.model_rg.feat_dim)
    assert res.classifier_g is not None and res.classifier_g is not res.classifier_rg
    assert first["labels_purity"] == pytest.approx(1.0)


def test_classifier_mode_needs_a_label_file(source):
    recs, imgs = source
    with pytest.raises(ValueError, match="identity_loss='classifier' needs label_file"):
        run_cmam(replace(SMOKE, identity_loss="classifier"), recs, imgs, progress=False)
    with pytest.raises(ValueError, match="kl_reduction='max'"):
        run_cmam(replace(SMOKE, kl_reduction="max"), recs, imgs, progress=False)


def test_two_run_resume_reaches_the_same_weights(source, tmp_path):
    """A run killed at the end of run 1 resumes into run 2 (fresh optimizer) exactly."""
    recs, imgs = source
    cfg = _code(tmp_path, recs)
    full = run_cmam(cfg, recs, imgs, run_dir=tmp_path / "full", progress=False)

    def kill(epoch, row):
        if epoch == 0:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_cmam(cfg, recs, imgs, run_dir=tmp_path / "killed", progress=False, on_epoch_end=kill)
    resumed = run_cmam(cfg, recs, imgs, run_dir=tmp_path / "killed", resume=True, progress=False)
    _same(_weights(full), _weights(resumed))
    _same(full.classifier_rg.state_dict(), resumed.classifier_rg.state_dict())
    assert resumed.history[1]["loss_ce_rg_rgb"] == pytest.approx(full.history[1]["loss_ce_rg_rgb"])


def test_two_runs_restart_the_optimizer(source, tmp_path, monkeypatch):
    """schedule="two_runs": a second optimizer at the KL start, none with "one_run"."""
    from cmamlib.training import cmam as cmam_mod

    made = []
    real = cmam_mod.make_optimizer
    monkeypatch.setattr(cmam_mod, "make_optimizer", lambda *a: made.append(1) or real(*a))
    recs, imgs = source
    run_cmam(_code(tmp_path, recs), recs, imgs, progress=False)
    assert len(made) == 2
    run_cmam(_code(tmp_path, recs, schedule="one_run"), recs, imgs, progress=False)
    assert len(made) == 3


def test_two_run_lr_factor_oracle():
    """Warm-up from 0.01x over 2000/15000, flat until 9000/15000, cosine to eta_min: the
    code's schedule written per iteration of a 15000-step run."""
    import math

    from cmamlib.training.cmam import two_run_lr_factor

    cfg = CMAMConfig()
    eta = 7.7e-7 / 3.5e-4
    for it in (0, 1000, 1999, 2000, 5000, 8999, 9000, 12000, 14999):
        if it < 2000:
            want = 0.01 * (1 - it / 2000) + it / 2000
        elif it < 9000:
            want = 1.0
        else:
            want = eta + (1 - eta) * (1 + math.cos(math.pi * (it - 9000) / 6000)) / 2
        assert two_run_lr_factor(it / 15000, cfg) == pytest.approx(want, abs=1e-9)


def test_kl_reduction_sum_is_the_batch_size_times_the_mean(source, tmp_path):
    recs, imgs = source
    cfg = _code(tmp_path, recs, sim_weight=0.0, epochs=1, kl_start_fraction=0.0, iters_per_epoch=1)
    a = run_cmam(replace(cfg, kl_reduction="sum"), recs, imgs, progress=False).history[0]
    b = run_cmam(replace(cfg, kl_reduction="mean"), recs, imgs, progress=False).history[0]
    assert a["loss_ce_rg_rgb"] == pytest.approx(b["loss_ce_rg_rgb"])  # the same first step
    assert a["loss_rg2g"] == pytest.approx(SMOKE.batch_size * b["loss_rg2g"], rel=1e-4)


def test_memory_init_train_mode_features(source):
    """memory_init="train": memories from train-mode BNNeck features; BN statistics untouched."""
    from cmamlib.training.cmam import train_mode_features

    recs, imgs = source
    torch.manual_seed(0)
    from cmamlib.models import build_model

    m = build_model("resnet18", width=8).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    f = train_mode_features(m, imgs[:9], torch.device("cpu"), 4)
    assert f.shape == (9, m.feat_dim) and not m.training
    assert torch.allclose(f.norm(dim=1), torch.ones(9), atol=1e-5)
    _same(before, m.state_dict())
    # oracle: the same even chunks (3 x 3 here) in train mode, one by one
    from cmamlib.data.loading import iterate_batches

    m.train()
    want = torch.cat([torch.nn.functional.normalize(m(x).bn_feat, dim=1) for x in iterate_batches(imgs[:9], 3)])
    m.eval()
    assert torch.allclose(f, want.detach(), atol=1e-5)
    a = run_cmam(replace(SMOKE, epochs=1, memory_init="eval"), recs, imgs, progress=False)
    b = run_cmam(replace(SMOKE, epochs=1, memory_init="train"), recs, imgs, progress=False)
    assert b.history[0]["loss_mem_rg_rgb"] == b.history[0]["loss_mem_rg_rgb"]
    assert b.history[0]["loss_mem_rg_rgb"] != pytest.approx(a.history[0]["loss_mem_rg_rgb"], rel=1e-6)


def test_rg_memory_update_view_mean_is_one_row_per_image(source):
    """Memory mode: ``rg_memory_update="rgb_then_gray"`` (the default) updates F_rg's memory
    with every RGB row, then every gray row; ``"view_mean"`` with one row per image, the mean
    of its two L2-normalised view features. Oracle: the features of
    the same two forwards, by hand; then the momentum update equals a per-image loop."""
    import torch.nn.functional as F

    from cmamlib.losses import CrossEntropyLabelSmooth, SimilarityMatrixLoss, SymmetricKL, TripletLoss
    from cmamlib.memory import ClusterMemory
    from cmamlib.models import build_model
    from cmamlib.training.cmam_step import step_losses

    _, imgs = source
    x = imgs[:6].float() / 255.0 if imgs.dtype == torch.uint8 else imgs[:6].float()
    xg = x.mean(1, keepdim=True).expand_as(x).contiguous()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.manual_seed(0)
    m = build_model("resnet18", width=8).train()  # train-mode forwards (batch statistics) are repeatable
    mem = ClusterMemory(m.feat_dim, 3, 0.05, 0.2, "mean")
    mem.features.copy_(F.normalize(torch.randn(3, m.feat_dim), dim=1))
    args = (y, y, m, None, (mem, None), None, None, SymmetricKL(), SimilarityMatrixLoss("sum"))
    rest = (TripletLoss(None), CrossEntropyLabelSmooth(0.1), False, torch.device("cpu"))
    cfg = replace(SMOKE, use_aux_gray=False, view_forward="separate")
    assert cfg.rg_memory_update == "rgb_then_gray"
    with torch.no_grad():
        f_rgb, f_rgg = m(x).bn_feat, m(xg).bn_feat
        mean = step_losses(replace(cfg, rg_memory_update="view_mean"), x, xg, *args, *rest)
        seq = step_losses(cfg, x, xg, *args, *rest)
    want = 0.5 * (F.normalize(f_rgb, dim=1) + F.normalize(f_rgg, dim=1))
    assert torch.allclose(mean["_upd_rg"], want, atol=1e-6) and torch.equal(mean["_upd_rg_y"], y)
    assert torch.allclose(seq["_upd_rg"], torch.cat([f_rgb, f_rgg]), atol=1e-6)
    assert torch.equal(seq["_upd_rg_y"], torch.cat([y, y]))
    # the memory's "mean" rule on those rows: each class's entry moves towards the mean of
    # its rows (the module docstring); here, per class, by hand
    before = mem.features.clone()
    mem.update(mean["_upd_rg"], mean["_upd_rg_y"])
    for c in range(3):
        rows = F.normalize(want[y == c], dim=1)
        assert not torch.allclose(mem.features[c], before[c])
        assert torch.dot(mem.features[c], F.normalize(rows.mean(0), dim=0)) > torch.dot(
            before[c], F.normalize(rows.mean(0), dim=0)
        )
    with pytest.raises(ValueError, match="rg_memory_update='last'"):
        run_cmam(replace(SMOKE, rg_memory_update="last"), *source, progress=False)


def test_a_memory_run_from_before_rg_memory_update_resumes_only_as_rgb_then_gray(source, tmp_path):
    """Checkpoints written before ``rg_memory_update`` ran ``"rgb_then_gray"`` (the default):
    such a run resumes with it and is refused with ``"view_mean"``, naming the field."""
    recs, imgs = source
    cfg = replace(SMOKE, epochs=1)
    run_cmam(cfg, recs, imgs, run_dir=tmp_path, progress=False)
    ck = tmp_path / "checkpoint.pt"
    state = load_checkpoint(ck)
    del state["config"]["rg_memory_update"]
    torch.save(state, ck)
    with pytest.raises(ValueError, match="rg_memory_update"):
        run_cmam(replace(cfg, rg_memory_update="view_mean"), recs, imgs, run_dir=tmp_path, resume=True, progress=False)
    run_cmam(cfg, recs, imgs, run_dir=tmp_path, resume=True, progress=False)


def test_source_labels_file_quality_and_reuse(source, tmp_path):
    from cmamlib.data.label_files import read_label_file
    from cmamlib.training.source_labels import run_source_labels, source_label_config

    recs, imgs = source
    base = _code(tmp_path, recs, epochs=1)
    out = tmp_path / "sl" / "labels.csv"
    res = run_source_labels(base, recs, out, imgs, run_dir=tmp_path / "sl" / "run", progress=False)
    cfg = source_label_config(base)
    assert not cfg.use_gray_view and not cfg.use_aux_gray and cfg.identity_loss == "memory" and cfg.label_file is None
    assert out.is_file() and read_label_file(out, recs).tolist() == res.labels.tolist()
    assert set(res.quality) >= {"clusters", "ari", "purity", "noise_fraction"} and res.quality["clusters"] >= 1
    assert not res.reused and "loss_mem_rg_rgb" in res.history[0]
    again = run_source_labels(base, recs, out, imgs, progress=False)
    assert again.reused and again.labels.tolist() == res.labels.tolist()
    # the labels train stage 1 in classifier mode
    s1 = run_cmam(replace(base, label_file=str(out)), recs, imgs, progress=False)
    assert s1.history[0]["loss_ce_rg_rgb"] == s1.history[0]["loss_ce_rg_rgb"]


def test_stage1_run_makes_the_source_labels_once_per_seed(tiny_data, tmp_path):
    """experiments.stage1_run in classifier mode without label_file: the seed's source
    labels are made once in runs/source_labels/ and shared by every variant."""
    from cmamlib import experiments
    from cmamlib.training.cmam import CODE_DEFAULTS

    market = experiments.load_market(tiny_data / "Market-1501-synth", SMOKE.image_size, progress=False)
    base = replace(SMOKE, **CODE_DEFAULTS, epochs=2)
    a = experiments.stage1_run(base, "cmam", 0, market, tmp_path, progress=False)
    b = experiments.stage1_run(base, "rgb_gray_one_net", 0, market, tmp_path, progress=False)
    files = sorted((tmp_path / "source_labels").glob("seed0_*.csv"))
    assert len(files) == 1 and (files[0].parent / (files[0].name + ".json")).is_file()
    assert a.config.label_file == b.config.label_file == str(files[0])
    assert a.history[0]["label_file_sha256"] == b.history[0]["label_file_sha256"]
    assert a.model_g is not None and b.model_g is None


def test_stage1_metrics_report_the_configured_feature(source, monkeypatch):
    """Stage 1's reported direct-transfer feature is F_rg's pre-BNNeck GeM feature by
    default (the authors' code; ``test_feature``), and ``"bnneck"`` is another feature."""
    from cmamlib import experiments
    from cmamlib.models import build_model

    recs, imgs = source
    assert CMAMConfig().test_feature == "pre_bnneck" and SMOKE.test_feature == "pre_bnneck"
    torch.manual_seed(0)
    m = build_model("resnet18", width=8).eval()
    m.neck.running_mean.normal_()  # a trained BNNeck: not the identity of a fresh one
    got: dict = {}

    def fake_row(fn, sysu, trials):
        got["features"] = fn(imgs[:6])
        return {}

    monkeypatch.setattr(experiments, "sysu_row", fake_row)
    for feature in ("pre_bnneck", "bnneck"):
        experiments.stage1_metrics(m, None, None, 1, feature)
        want = experiments.model_features(m, feature=feature)(imgs[:6])
        torch.testing.assert_close(got["features"], want)
        got[feature] = want
    assert got["pre_bnneck"].shape[1] == m.feat_dim and not torch.allclose(got["pre_bnneck"], got["bnneck"])
