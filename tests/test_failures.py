"""Failure behaviour at scale (issue 9, item 6) and the GPU-path options on a CPU.

* a checkpoint write that fails (disk full, permission) leaves the previous checkpoint
  intact, the error names the path, and the run resumes from it to the same weights;
* a run killed while writing a checkpoint (a leftover temp file) resumes;
* an unreadable training image stops a run naming its path, or with
  ``data.skip_unreadable=true`` is skipped and listed;
* ``channels_last`` / ``pin_memory`` / ``amp_dtype`` / ``knn_backend`` options, and ``amp``
  on the CPU (bfloat16 autocast).
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_cmam import SMOKE, _same, _weights, source  # noqa: F401  (source: a fixture)

import cmamlib.training.common as common
import cmamlib.utils as utils
from cmamlib.cli import main
from cmamlib.data import DatasetError, read_market1501
from cmamlib.data.loading import load_images, load_readable_images
from cmamlib.data.transforms import normalize, to_float
from cmamlib.features import extract_features
from cmamlib.training.cmam import run_cmam
from cmamlib.training.common import Checkpointer, CheckpointError, gather_batch
from cmamlib.training.supervised import SupervisedConfig, run_supervised


def _disk_full_save(obj, f) -> None:
    """A ``torch.save`` that writes part of the file, then fails as a full disk does."""
    f.write(b"PK\x03\x04 partial checkpoint bytes")
    raise OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------------------- checkpoints


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = Checkpointer(tmp_path)
    ck.save({"epoch": 0, "w": torch.arange(3)})
    before = ck.path.read_bytes()
    monkeypatch.setattr(utils.torch, "save", _disk_full_save)
    with pytest.raises(CheckpointError) as e:
        ck.save({"epoch": 1, "w": torch.arange(5)})
    msg = str(e.value)
    assert str(ck.path) in msg and "epoch 1" in msg and "No space left" in msg and "intact" in msg
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert ck.path.read_bytes() == before
    assert ck.load()["epoch"] == 0 and torch.equal(ck.load()["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_permission_error_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = Checkpointer(tmp_path)
    ck.save({"epoch": 0})

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(utils.tempfile, "mkstemp", denied)
    with pytest.raises(CheckpointError, match="Permission denied") as e:
        ck.save({"epoch": 1})
    assert e.value.errno == errno.EACCES and str(ck.path) in str(e.value)
    monkeypatch.undo()
    assert ck.load()["epoch"] == 0


def test_run_with_a_failed_save_resumes_to_the_same_weights(source, tmp_path, monkeypatch):
    recs, imgs = source
    full = run_cmam(SMOKE, recs, imgs, run_dir=tmp_path / "full", progress=False)
    real = utils.atomic_save
    calls = {"n": 0}

    def fail_second(obj, path):  # epoch 0's checkpoint is written, epoch 1's write fails
        calls["n"] += 1
        if calls["n"] == 2:
            _disk_full_save(obj, open(Path(path).with_name(".checkpoint.pt.x.tmp"), "wb"))
        return real(obj, path)

    monkeypatch.setattr(common, "atomic_save", fail_second)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="epoch 1"):
        run_cmam(SMOKE, recs, imgs, run_dir=run, progress=False)
    monkeypatch.undo()
    assert Checkpointer(run).load()["epoch"] == 0
    resumed = run_cmam(SMOKE, recs, imgs, run_dir=run, resume=True, progress=False)
    _same(_weights(full), _weights(resumed))
    assert not list(run.glob("*.tmp"))  # the killed write's temp file was cleaned


def test_killed_mid_checkpoint_resumes(source, tmp_path):
    """A kill during the write leaves a temp file beside the last complete checkpoint."""
    recs, imgs = source
    cfg = replace(SMOKE, epochs=1)
    full = run_cmam(cfg, recs, imgs, run_dir=tmp_path / "full", progress=False)
    run = tmp_path / "run"
    run_cmam(cfg, recs, imgs, run_dir=run, progress=False)
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    again = run_cmam(cfg, recs, imgs, run_dir=run, resume=True, progress=False)
    _same(_weights(full), _weights(again))
    assert not (run / ".checkpoint.pt.abc123.tmp").exists()


# ----------------------------------------------------------------------------- unreadable images


def _broken_market(tiny_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "Market-1501-synth", root / "Market-1501-synth")
    bad = sorted((root / "Market-1501-synth" / "bounding_box_train").glob("*.jpg"))[3]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return root, bad


def test_load_readable_images_lists_the_unreadable(tiny_data, tmp_path):
    root, bad = _broken_market(tiny_data, tmp_path)
    recs = read_market1501(root / "Market-1501-synth", "train")
    with pytest.raises(DatasetError, match=bad.name):
        load_images(recs, (32, 16), progress=False)
    got = load_readable_images(recs, (32, 16), progress=False, cache_dir=tmp_path / "cache")
    assert [p for p, _ in got.skipped] == [str(bad)] and "cannot decode" in got.skipped[0][1]
    assert len(got.kept) == len(recs) - 1 and got.images.shape[0] == len(recs) - 1
    ref = load_images([r for r in recs if r.path != str(bad)], (32, 16), progress=False)
    assert torch.equal(got.images, ref)
    assert not (tmp_path / "cache").exists()  # no cache of an incomplete set


def test_training_stops_or_skips_unreadable(tiny_data, tmp_path, capsys):
    root, bad = _broken_market(tiny_data, tmp_path)
    common_args = ["train", "stage1", "--config", "smoke", "--data-root", str(root), "--no-progress", "stage1.epochs=1"]
    assert main([*common_args, "--out", str(tmp_path / "stop")]) == 1
    err = capsys.readouterr()
    assert bad.name in err.out + err.err
    assert not (tmp_path / "stop" / "checkpoint.pt").exists()
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        code = main([*common_args, "--out", str(tmp_path / "skip"), "data.skip_unreadable=true"])
    assert code == 0
    listed = (tmp_path / "skip" / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(str(bad))
    m = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert m["data"]["skipped_images"] == [str(bad)]
    n_all = len(read_market1501(root / "Market-1501-synth", "train"))
    assert m["data"]["images"] == n_all - 1


# ----------------------------------------------------------------------------- GPU-path options


def test_gather_batch_on_cpu():
    images = torch.randint(0, 256, (10, 3, 4, 2), dtype=torch.uint8)
    idx = torch.tensor([7, 1, 1, 4])
    for pin in (True, False):
        assert torch.equal(gather_batch(images, idx, torch.device("cpu"), pin), images[idx])


def test_channels_last_training_matches(source):
    recs, imgs = source
    cfg = SupervisedConfig(
        width=8, image_size=(32, 16), batch_size=16, num_instances=4, epochs=1, iters_per_epoch=3, device="cpu"
    )
    a = run_supervised(cfg, recs, imgs, progress=False).model.state_dict()
    b = run_supervised(replace(cfg, channels_last=True), recs, imgs, progress=False).model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4, rtol=1e-3), k


def test_gpu_options_validated_and_knn_backend_auto(source):
    with pytest.raises(ValueError, match="amp_dtype='fp8'"):
        replace(SMOKE, amp_dtype="fp8").validate()
    with pytest.raises(ValueError, match="knn_backend='annoy'"):
        replace(SMOKE, knn_backend="annoy").validate()
    recs, imgs = source
    cfg = replace(SMOKE, epochs=1, iters_per_epoch=2)
    a = run_cmam(cfg, recs, imgs, progress=False)
    b = run_cmam(replace(cfg, knn_backend="auto", amp_dtype="bfloat16"), recs, imgs, progress=False)
    assert (a.labels == b.labels).all()  # faiss, when installed, finds the same exact neighbours


def test_cpu_amp_trains_and_extracts_in_bfloat16(source):
    """``amp=True`` on the CPU: convolutions run in bfloat16 (whatever ``amp_dtype`` says),
    the weights stay float32 and finite, and the run stays near the float32 one."""
    cpu = torch.device("cpu")
    with common.autocast(cpu, True, "float16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with common.autocast(cpu, False, "bfloat16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert common.amp_cast_dtype("cuda", "float16") == torch.float16
    recs, imgs = source
    cfg = SupervisedConfig(
        width=8, image_size=(32, 16), batch_size=16, num_instances=4, epochs=1, iters_per_epoch=3, device="cpu"
    )
    seen: list[torch.dtype] = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(o.dtype) if isinstance(m, torch.nn.Conv2d) else None
    )
    try:
        res = run_supervised(replace(cfg, amp=True), recs, imgs, progress=False)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    ref = run_supervised(cfg, recs, imgs, progress=False).model.state_dict()
    for k, v in res.model.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32 and bool(torch.isfinite(v).all()), k
            assert torch.allclose(v, ref[k], atol=0.05, rtol=0.05), k
    x = normalize(to_float(imgs[:32]))
    f32 = extract_features(res.model, [x], amp=False)
    f16 = extract_features(res.model, [x], amp=True, amp_dtype="float16")  # CPU: bfloat16
    assert f16.dtype == torch.float32 and not f16.requires_grad  # still under no_grad
    assert float(torch.nn.functional.cosine_similarity(f32, f16).min()) > 0.98
    b = run_cmam(replace(SMOKE, epochs=1, iters_per_epoch=2, amp=True), recs, imgs, progress=False)
    assert all(bool(torch.isfinite(v).all()) for v in _weights(b).values() if v.is_floating_point())
