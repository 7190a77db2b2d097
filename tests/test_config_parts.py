"""Composed configs (cmamlib.training.config_parts): the shared parts, the one choice
checker, and a comment beside every field of every config."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import pytest

from cmamlib import presets
from cmamlib.training.cmam_config import CMAMConfig
from cmamlib.training.config_parts import (
    BackboneConfig,
    ClusteringConfig,
    MemoryConfig,
    OptimConfig,
    RuntimeConfig,
    StageRuntimeConfig,
    check_choice,
    check_choices,
)
from cmamlib.training.selftrain_config import SelfTrainConfig
from cmamlib.training.supervised import SupervisedConfig

CONFIGS = (SupervisedConfig, CMAMConfig, SelfTrainConfig)
PARTS = (BackboneConfig, OptimConfig, ClusteringConfig, MemoryConfig, RuntimeConfig, StageRuntimeConfig)


def test_the_stage_configs_are_composed_of_the_shared_parts():
    for part in (BackboneConfig, OptimConfig, RuntimeConfig):
        assert all(issubclass(c, part) for c in CONFIGS)
    for part in (ClusteringConfig, MemoryConfig, StageRuntimeConfig):
        assert issubclass(CMAMConfig, part) and issubclass(SelfTrainConfig, part)
        assert not issubclass(SupervisedConfig, part)
    # a part's field is declared once, in the part, unless a stage needs its own default
    own = {c: set(c.__dict__["__annotations__"]) for c in CONFIGS}
    assert "arch" not in set().union(*own.values()) and "seed" not in set().union(*own.values())
    assert {"epochs", "iters_per_epoch"} <= own[CMAMConfig] & own[SelfTrainConfig] & own[SupervisedConfig]


def test_part_view_and_stage_defaults():
    cfg = SelfTrainConfig(width=8, eps=(0.5, 0.6), seed=3)
    assert cfg.part(BackboneConfig) == BackboneConfig(width=8)
    assert cfg.part(ClusteringConfig).eps == (0.5, 0.6)
    assert cfg.part(StageRuntimeConfig).seed == 3
    with pytest.raises(TypeError, match="SupervisedConfig has no part ClusteringConfig"):
        SupervisedConfig().part(ClusteringConfig)
    # each stage keeps its own defaults where it redeclares a field
    assert (CMAMConfig().eps, SelfTrainConfig().eps, ClusteringConfig().eps) == (0.5, 0.4, 0.5)
    assert (CMAMConfig().epochs, SelfTrainConfig().epochs, SupervisedConfig().epochs) == (8, 6, 40)


def test_one_choice_checker_for_every_config():
    with pytest.raises(ValueError, match=r"fusion='max': expected one of \['concat', 'mean'\]"):
        check_choice("fusion", "max", ("concat", "mean"))
    cases = [
        (SupervisedConfig(arch="vgg"), "arch='vgg'"),
        (SupervisedConfig(gray_mode="rgb"), "gray_mode='rgb'"),
        (SupervisedConfig(amp_dtype="float8"), "amp_dtype='float8'"),
        (CMAMConfig(knn_backend="annoy"), "knn_backend='annoy'"),
        (CMAMConfig(memory_mode="soft"), "memory_mode='soft'"),
        (CMAMConfig(view_forward="both"), "view_forward='both'"),
        (SelfTrainConfig(match_cost="l1"), "match_cost='l1'"),
        (SelfTrainConfig(sampler="random"), "sampler='random'"),
    ]
    for cfg, msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg) + ": expected one of"):
            cfg.validate()
    for c in CONFIGS:
        c().validate()
        check_choices(c())


def _declaring_class(cls, name):
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    raise AssertionError(name)


@pytest.mark.parametrize("cls", CONFIGS + PARTS, ids=lambda c: c.__name__)
def test_every_field_has_a_comment_beside_it(cls):
    """Each field's declaration is preceded by a ``#:`` comment (fields that share one
    comment follow it directly)."""
    missing = []
    for f in fields(cls):
        klass = _declaring_class(cls, f.name)
        lines = inspect.getsource(klass).splitlines()
        at = next(i for i, line in enumerate(lines) if re.match(rf"\s+{f.name}: ", line))
        i = at - 1
        while i >= 0 and re.match(r"\s+\w+: .*=", lines[i]):  # fields sharing the comment above
            i -= 1
        if i < 0 or not lines[i].strip().startswith("#:"):
            missing.append(f"{klass.__name__}.{f.name}")
    assert not missing, f"fields without a comment beside them: {missing}"


def test_flat_override_keys_still_work():
    cfg = presets.load_config("smoke", ["stage2.eps=0.55", "stage1.arch=resnet34", "stage2.k1=[10, 12]"])
    assert cfg.stage2.eps == 0.55 and cfg.stage1.arch == "resnet34" and cfg.stage2.k1 == (10, 12)
