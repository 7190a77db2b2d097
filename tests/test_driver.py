"""The one training driver (cmamlib.training.driver): a toy stage shows what the driver
owns (log rows, learning rate, resume, checkpoints, the hook), and the three trainers are
its stages."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

from cmamlib.training import cmam, selftrain, supervised
from cmamlib.training.common import make_optimizer, make_scaler
from cmamlib.training.driver import Stage, train
from cmamlib.training.loop import StopTraining
from cmamlib.utils import load_checkpoint


@dataclass
class ToyConfig:
    epochs: int = 3
    lr: float = 0.1
    seed: int = 0


class ToyStage(Stage):
    """Least squares on random data: 4 batches of 8 per epoch, a fresh shuffle per epoch."""

    name = "toy"
    desc = "toy"

    def __init__(self, config: ToyConfig):
        self.config = config
        torch.manual_seed(config.seed)
        self.net = nn.Linear(3, 1)
        self.x = torch.randn(32, 3)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]])
        self.opt = make_optimizer(self.net.parameters(), config.lr, 0.0)
        self.scaler = make_scaler(torch.device("cpu"), False)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.modules = {"net": self.net}
        self.train_modules = self.eval_modules = [self.net]
        self.epochs = config.epochs
        self.steps = 0
        self.lrs: list[float] = []

    def begin_epoch(self, epoch):
        perm = torch.randperm(32, generator=self.gen).numpy()
        return {"epoch": epoch, "phase": "toy"}, [perm[i : i + 8] for i in range(0, 32, 8)]

    def lr(self, epoch, i, n_batches):
        return self.config.lr / (1 + epoch)

    def step(self, epoch, i, idx):
        self.lrs.append(self.opt.param_groups[0]["lr"])
        t = torch.as_tensor(idx)
        loss = ((self.net(self.x[t]) - self.y[t]) ** 2).mean()
        return loss, {"mse": loss, "const": 2.0}

    def after_step(self):
        self.steps += 1

    def extra_state(self):
        return {"steps": self.steps}

    def restore(self, state):
        self.steps = state["steps"]


def test_driver_rows_lr_and_eval_mode(tmp_path):
    stage = ToyStage(ToyConfig())
    res = train(stage, tmp_path, progress=False)
    assert [r["epoch"] for r in res.history] == [0, 1, 2]
    row = res.history[0]
    assert row["phase"] == "toy" and row["batches"] == 4 and row["loss_const"] == pytest.approx(2.0)
    assert row["lr_end"] == pytest.approx(0.1) and res.history[2]["lr_end"] == pytest.approx(0.1 / 3)
    assert stage.lrs[:4] == [pytest.approx(0.1)] * 4 and stage.lrs[4] == pytest.approx(0.05)  # set before each step
    assert res.history[-1]["loss_mse"] < res.history[0]["loss_mse"]  # it trains
    assert res.n_seen == 3 * 32 and stage.steps == 12
    assert not stage.net.training  # eval mode at the end
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss_mse"] for r in logged] == [r["loss_mse"] for r in res.history]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["stage"] == "toy" and state["epoch"] == 2 and state["steps"] == 12
    assert state["config"] == {"epochs": 3, "lr": 0.1, "seed": 0}


def test_driver_resume_equals_uninterrupted_run(tmp_path):
    full = ToyStage(ToyConfig())
    ref = train(full, progress=False)

    def stop(epoch, row):
        if epoch == 0:
            raise StopTraining

    with pytest.raises(StopTraining):
        train(ToyStage(ToyConfig()), tmp_path, progress=False, on_epoch_end=stop)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    again = ToyStage(ToyConfig())
    res = train(again, tmp_path, resume=True, progress=False)
    assert [r["loss_mse"] for r in res.history] == [r["loss_mse"] for r in ref.history]
    assert again.steps == 12  # the stage's own state came back from the checkpoint
    for a, b in zip(full.net.parameters(), again.net.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another config"):
        train(ToyStage(ToyConfig(lr=0.2)), tmp_path, resume=True, progress=False)


def test_driver_fresh_run_replaces_log_but_a_log_path_is_appended_to(tmp_path):
    train(ToyStage(ToyConfig(epochs=2)), tmp_path / "run", progress=False)
    train(ToyStage(ToyConfig(epochs=1)), tmp_path / "run", progress=False)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1
    log = tmp_path / "sup.jsonl"
    train(ToyStage(ToyConfig(epochs=1)), log_path=log, progress=False)
    train(ToyStage(ToyConfig(epochs=1)), log_path=log, progress=False)
    assert len(log.read_text().splitlines()) == 2
    assert not (tmp_path / "checkpoint.pt").exists()


def test_the_three_trainers_are_driver_stages(monkeypatch):
    assert issubclass(supervised.SupervisedStage, Stage)
    assert issubclass(cmam.CMAMStage, Stage)
    assert issubclass(selftrain.SelfTrainStage, Stage)
    names = {supervised.SupervisedStage.name, cmam.CMAMStage.name, selftrain.SelfTrainStage.name}
    assert names == {"supervised", "cmam", "selftrain"}
    seen = []
    real = supervised.train
    monkeypatch.setattr(supervised, "train", lambda stage, **kw: seen.append(stage) or real(stage, **kw))
    from cmamlib.data.records import VISIBLE, Record

    recs = [Record(f"x{i}.png", i % 4, 1, VISIBLE) for i in range(16)]
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (16, 3, 32, 16), dtype=np.uint8))
    cfg = supervised.SupervisedConfig(width=8, image_size=(32, 16), epochs=1, iters_per_epoch=2, batch_size=8)
    res = supervised.run_supervised(cfg, recs, imgs, progress=False)
    assert len(seen) == 1 and isinstance(seen[0], supervised.SupervisedStage)
    assert [k for k in res.history[0] if k in ("ce", "triplet", "acc")] == ["ce", "triplet", "acc"]
