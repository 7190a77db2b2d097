"""Run configurations for ``python -m cmamlib train``: named presets, YAML files and
``key=value`` overrides, resolved into one type-checked :class:`RunConfig`.

A run configuration has four parts (the same structure in a preset, a YAML file and
the ``config.yaml`` a run writes)::

    preset: paper-sysu-mm01       # where it started (informational)
    init_from: null               # train stage2: the stage-1 run folder (--out of train stage1)
    require_pretrained: true      # refuse to train without stage1.pretrained
    data:   {source: market-1501, source_dir: null, source_splits: [train], target: sysu-mm01, ...}
    stage1: {...}                 # cmamlib.training.cmam.CMAMConfig fields
    stage2: {...}                 # cmamlib.training.selftrain.SelfTrainConfig fields

**Presets** (:data:`PRESETS`, ``python -m cmamlib train --list-presets``):

``smoke``
    Seconds on a CPU: width-8 ResNet-18, 32x16 images, 2 epochs of a few batches, on
    the synthetic benchmark (``Market-1501-synth`` -> ``SYSU-MM01-synth``). For tests and
    for checking an installation, not for results.
``cpu-default``
    The defaults of :class:`~cmamlib.training.cmam.CMAMConfig` and
    :class:`~cmamlib.training.selftrain.SelfTrainConfig` (the CPU synthetic benchmark of
    the notebooks), on the synthetic benchmark.
``cpu-long``
    The best setting measured on the synthetic benchmark, all reconstructions (the
    comment at its entry in :data:`PRESETS`), measured with the earlier defaults of both
    stages and keeping them (``EARLIER_DEFAULTS``): ``cpu-default`` with luma gray views, stage-1 SIM
    weight 0.05, 24 stage-2 epochs (4x the steps), stage-2 temperature 0.1 and Jaccard +
    DBSCAN at the scale of the synthetic identities (k1 5, k2 3, min_samples 2, eps
    0.5). About 225 s per stage-2 run on 2 cores, against 45 s; ``make reproduce-long``
    runs notebook 03 with it.
``paper-sysu-mm01``, ``paper-regdb``
    The authors' code at paper scale (``docs/method.md``, "Defaults at paper scale"):
    ResNet-50 (width 64; non-local blocks off, as what the authors' code runs: its config
    builds them but its wrapper never calls them; ``stage1.non_local=true
    stage2.non_local=true`` adds them), last stride 1, GeM, BNNeck,
    384x128; stage 1 batch 64 = 4 ids x 16, Adam 3.5e-4, 50 epochs x 600 iterations
    (the code's two runs of 15k iterations, KL from the second half); stage 2 batch
    128 = 8 ids x 16, Adam 1e-4, 40 epochs x 300 iterations (the code's 12k), Jaccard
    k1 30 / k2 6, DBSCAN eps 0.6 on the source (cluster-contrast's Market-1501 value)
    and 0.4 on the target (the code), AMP, weight decay 5e-4, crop / flip / erasing 0.5 /
    jitter 0.15, no camera centring (a reconstruction for random-init CPU runs), F_rg's
    two views in two forwards (``stage1.view_forward=separate``) and the stage-2
    distance-matrix term summed over the batch (``stage2.dist_reduction=sum``), as the
    code. Stage 2's k-means phase as the code's scripts: on SYSU-MM01 the 40 DBSCAN
    epochs are followed by 40 spherical k-means epochs (``stage2.kmeans_epochs``; K the
    last DBSCAN count, ``stage2.kmeans_k=400`` the code's); on RegDB k-means only, K 400,
    re-clustering every 200 iterations (``stage2.epochs=0``, 60 k-means epochs x 200).
    The other code-following stage-2 choices (``init_carry``, ``kl_detach``,
    ``kl_reduction``, ``ward_space``, ``test_feature``; ``sampler=other_cameras``) come
    from :class:`~cmamlib.training.selftrain.SelfTrainConfig`'s defaults
    (``FOLLOW_CODE_DEFAULTS`` in :mod:`cmamlib.training.selftrain_config`) or overrides.
    Source: Market-1501 train + query + gallery (the code's train+test), unlabeled;
    the authors' PPLR pseudo labels, if you have them as a ``path,label`` CSV, go in
    ``stage1.label_file``.
``paper-sysu-mm02``, ``paper-llcm``
    The same at 288x144 with the peer USL-VI schedule (ADCA / PGM) for stage 2: 50
    epochs x 200 iterations (SYSU-MM02: then 50 k-means epochs, as the code's script;
    LLCM, which the code has no script for: no k-means phase).

Paper presets need ImageNet weights: ``stage1.pretrained=/path/resnet50.pth`` (a
torchvision ResNet-50 state dict, :func:`cmamlib.models.load_pretrained`); without it
``train stage1`` refuses to start (``require_pretrained=false`` trains from random
init on purpose). Stage 2 takes its weights from stage 1 (``init_from``).

**Overrides**: ``section.field=value`` (``stage2.eps=0.5``, ``stage1.image_size=384,128``,
``stage1.augment.erasing=0``, ``data.target=regdb``, ``init_from=runs/s1``). Values are
checked against the field types (int, float, bool, str, tuples, None where allowed:
``null`` / ``none``); an unknown key or a bad value raises :class:`ConfigError` naming
it. A YAML file may start from a preset or another file with ``base: NAME_OR_PATH``.

Dataset folders: ``data.source_dir`` / ``data.target_dir`` relative to the data root
(``--data-root``, default ``data``) or absolute; ``null`` means the dataset's usual
folder name (:data:`DEFAULT_DIRS`, or :data:`SYNTH_DIRS` with ``data.synthetic=true``,
as in ``smoke`` and ``cpu-default``).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

from .training.cmam import EARLIER_DEFAULTS as S1_EARLIER
from .training.cmam import CMAMConfig
from .training.selftrain import EARLIER_DEFAULTS as S2_EARLIER
from .training.selftrain import SelfTrainConfig

__all__ = [
    "DEFAULT_DIRS",
    "NOTEBOOK_SMOKE",
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "RunConfig",
    "at_smoke_scale",
    "config_dict",
    "diff_configs",
    "load_config",
    "parse_overrides",
    "preset_names",
    "read_config",
    "save_config",
]


class ConfigError(ValueError):
    """A bad preset name, config file, key or value (the message names it)."""


#: Usual folder name of each dataset under the data root (as their authors distribute them).
DEFAULT_DIRS: dict[str, str] = {
    "sysu-mm01": "SYSU-MM01",
    "sysu-mm02": "SYSU-MM02",
    "regdb": "RegDB",
    "llcm": "LLCM",
    "market-1501": "Market-1501-v15.09.15",
    "msmt17": "MSMT17_V1",
}

#: Folder names of the embedded synthetic benchmark (``make data``), used with ``data.synthetic``.
SYNTH_DIRS: dict[str, str] = {
    "sysu-mm01": "SYSU-MM01-synth",
    "sysu-mm02": "SYSU-MM02-synth",
    "regdb": "RegDB-synth",
    "market-1501": "Market-1501-synth",
}


@dataclass
class DataConfig:
    """Which datasets a run reads (identity labels are never used for training).

    Attributes:
        synthetic: the embedded synthetic benchmark: folders default to
            :data:`SYNTH_DIRS` (``Market-1501-synth``...) instead of :data:`DEFAULT_DIRS`.
        source: stage-1 source dataset (a reader name: ``market-1501``, ``msmt17``...).
        source_dir: its folder, relative to the data root or absolute; None = the usual
            folder name of the dataset (:data:`DEFAULT_DIRS` / :data:`SYNTH_DIRS`).
        source_splits: splits of the source read as unlabeled training images (the
            authors' code: Market-1501 train + test).
        target: stage-2 target dataset (``sysu-mm01``, ``regdb``, ``llcm``, ``sysu-mm02``).
        target_dir: as ``source_dir``.
        regdb_trial: RegDB split (1..10) whose training images stage 2 trains on.
        cache_dir: decoded-image cache (``.npy``, memory-mapped on reuse) or None.
        decode_workers: image-decoding threads (None: one per core).
        skip_unreadable: an unreadable training image (truncated, not an image,
            missing) stops the run naming its path (False, default), or is skipped and
            listed in ``<run>/skipped_images.txt`` and the run's ``metrics.json`` (True).
            Test images are never skipped.
    """

    synthetic: bool = True
    source: str = "market-1501"
    source_dir: str | None = None
    source_splits: tuple[str, ...] = ("train",)
    target: str = "sysu-mm01"
    target_dir: str | None = None
    regdb_trial: int = 1
    cache_dir: str | None = None
    decode_workers: int | None = None
    skip_unreadable: bool = False

    def validate(self) -> None:
        from .data.readers import DATASET_SPLITS, _canonical_name

        for key in ("source", "target"):
            try:
                setattr(self, key, _canonical_name(getattr(self, key)))
            except ValueError as e:
                raise ConfigError(f"data.{key}: {e}") from None
        allowed = DATASET_SPLITS.get(self.source)
        bad = [s for s in self.source_splits if allowed is not None and s not in allowed]
        if bad or not self.source_splits:
            raise ConfigError(
                f"data.source_splits={list(self.source_splits)}: expected splits of {self.source} among {allowed}"
            )
        if not 1 <= self.regdb_trial <= 10:
            raise ConfigError(f"data.regdb_trial={self.regdb_trial}: expected 1..10")
        for key in ("source", "target"):
            name = getattr(self, key)
            if self.synthetic and getattr(self, f"{key}_dir") is None and name not in SYNTH_DIRS:
                raise ConfigError(
                    f"data.{key}={name}: the synthetic benchmark has no {name} (it has {', '.join(SYNTH_DIRS)}); "
                    f"set data.synthetic=false or data.{key}_dir=FOLDER"
                )

    def root(self, which: str, data_root: str | os.PathLike) -> Path:
        """Folder of the ``"source"`` or ``"target"`` dataset."""
        name, d = (self.source, self.source_dir) if which == "source" else (self.target, self.target_dir)
        if d is None:
            d = (SYNTH_DIRS if self.synthetic else DEFAULT_DIRS).get(name, name)
        p = Path(os.path.expanduser(d))
        return p if p.is_absolute() else Path(data_root) / p


@dataclass
class RunConfig:
    """Everything ``python -m cmamlib train`` needs (module docstring).

    Attributes:
        preset: name of the preset (or file) it was resolved from; informational.
        init_from: stage 2 only: the stage-1 run folder whose ``config.yaml`` and
            ``checkpoint.pt`` initialise models A and B; ``"random"`` = random init (the
            no-stage-1 ablation). Required by ``train stage2``.
        require_pretrained: ``train stage1`` refuses to start without
            ``stage1.pretrained`` (the paper presets: they fine-tune ImageNet weights).
        data: :class:`DataConfig`.
        stage1: :class:`~cmamlib.training.cmam.CMAMConfig`.
        stage2: :class:`~cmamlib.training.selftrain.SelfTrainConfig`.
    """

    preset: str | None = None
    init_from: str | None = None
    require_pretrained: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    stage1: CMAMConfig = field(default_factory=CMAMConfig)
    stage2: SelfTrainConfig = field(default_factory=SelfTrainConfig)

    def validate(self) -> None:
        self.data.validate()
        for name in ("stage1", "stage2"):
            try:
                getattr(self, name).validate()
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None


# ----------------------------------------------------------------------------- presets

_SMOKE_COMMON = dict(
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
)

#: The notebooks' ``SMOKE=True`` scale (the notebook tests run every notebook so): the
#: ``smoke`` preset's sizes with 4 steps per epoch in both stages and the configs' own
#: evaluation batch (the ``smoke`` preset, older, has 3 stage-2 steps and batches of 64;
#: each keeps its recorded numbers). :func:`at_smoke_scale` applies them.
NOTEBOOK_SMOKE: dict[str, dict] = {
    "stage1": {**{k: v for k, v in _SMOKE_COMMON.items() if k != "eval_batch_size"}, "iters_per_epoch": 4},
    "stage2": {**{k: v for k, v in _SMOKE_COMMON.items() if k != "eval_batch_size"}, "iters_per_epoch": 4},
    "supervised": dict(width=8, image_size=(32, 16), batch_size=32, epochs=1, iters_per_epoch=4),
}


def at_smoke_scale(config):
    """``config`` (a ``CMAMConfig``, ``SelfTrainConfig`` or ``SupervisedConfig``) at the
    notebooks' SMOKE scale (:data:`NOTEBOOK_SMOKE`); every other field is kept."""
    from .training.supervised import SupervisedConfig

    kind = {CMAMConfig: "stage1", SelfTrainConfig: "stage2", SupervisedConfig: "supervised"}.get(type(config))
    if kind is None:
        raise TypeError(f"at_smoke_scale: expected a stage-1, stage-2 or supervised config, not {type(config)}")
    return replace(config, **NOTEBOOK_SMOKE[kind])


_PAPER_AUGMENT = dict(flip=0.5, pad=10, erasing=0.5, jitter=0.15)
_PAPER_BACKBONE = dict(
    arch="resnet50",
    width=64,
    last_stride=1,
    non_local=False,
    pretrained=None,
    amp=True,
    weight_decay=5e-4,
    camera_centering=False,
    augment=_PAPER_AUGMENT,
    eval_batch_size=256,
)


def _paper(target: str, size: tuple[int, int], s2_epochs: int, s2_iters: int, description: str, **stage2: Any) -> dict:
    """A paper-scale preset; ``stage2``: extra stage-2 fields (the k-means phase)."""
    return {
        "description": description,
        "require_pretrained": True,
        "data": {
            "synthetic": False,
            "source": "market-1501",
            "source_splits": ["train", "query", "gallery"],
            "target": target,
        },
        "stage1": {
            **_PAPER_BACKBONE,
            "image_size": size,
            "batch_size": 64,
            "num_instances": 16,
            "lr": 3.5e-4,
            "epochs": 50,
            "iters_per_epoch": 600,
            "kl_start_fraction": 0.5,
            "k1": 30,
            "k2": 6,
            "eps": 0.6,
            "min_samples": 4,
            "view_forward": "separate",
        },
        "stage2": {
            **_PAPER_BACKBONE,
            "image_size": size,
            "batch_size": 128,
            "num_instances": 16,
            "lr": 1e-4,
            "epochs": s2_epochs,
            "iters_per_epoch": s2_iters,
            "k1": 30,
            "k2": 6,
            "eps": 0.4,
            "min_samples": 4,
            "dist_reduction": "sum",
            **stage2,
        },
    }


#: The code's SYSU scripts: a DBSCAN run, then a fresh run of the same length with spherical
#: k-means per modality (K: the last DBSCAN count, a reconstruction; the code's 400 is
#: ``stage2.kmeans_k=400``).
def _sysu_kmeans(epochs: int) -> dict:
    return {"kmeans_epochs": epochs, "kmeans_k": None}


#: The code's RegDB script: k-means (K 400) + Hungarian only, re-clustering every 200
#: iterations for 12k iterations.
_REGDB_KMEANS = {"epochs": 0, "kmeans_epochs": 60, "iters_per_epoch": 200, "kmeans_k": 400}


#: Named presets: ``{"description": ..., <RunConfig overrides by section>}``.
PRESETS: dict[str, dict] = {
    "smoke": {
        "description": (
            "seconds on a CPU (tests, installation check): width-8 ResNet-18, 32x16, 2 short epochs, synthetic data"
        ),
        "stage1": {**_SMOKE_COMMON, "iters_per_epoch": 4, "kl_start_fraction": 0.5},
        "stage2": {**_SMOKE_COMMON, "iters_per_epoch": 3},
    },
    "cpu-default": {
        "description": "the CMAMConfig / SelfTrainConfig defaults (the notebooks' CPU synthetic benchmark)",
    },
    # ``cpu-long``: every field is a reconstruction measured on SYSU-MM01-synth (reports/README.md,
    # "What the probes found"; investigations/probe_stage2_length.py); the rest is cpu-default.
    #   stage1 gray_mode luma, sim_weight 0.05: from random init the code's SIM weight 0.5
    #       collapses CMAM on every seed; a tenth of it trains (notebook 02, row (iv')).
    #   stage2 epochs 24 (4x the steps): at cpu-default's 240 steps stage 2's loop reaches
    #       21.6 all-search mAP even on the true identities, 37.7 at 24 epochs (probe_oracle_labels).
    #   stage2 temperature 0.1 (the code: 0.05): 47.4 against 37.7 on the true identities at 24 epochs.
    #   stage2 k1 5, k2 3, min_samples 2, eps 0.5: clustering at the scale of the synthetic
    #       identities (about 10 visible and 5 infrared training images each; the code's
    #       30 / 6 / 4 suit real SYSU-MM01's 56 / 30).
    # Measured with the earlier defaults of both stages (memory identity term re-clustered per epoch,
    # one run, batch-mean KL; stage 2 carrying the whole network, fused test feature...), so it keeps
    # them: EARLIER_DEFAULTS of cmamlib.training.cmam and cmamlib.training.selftrain_config.
    # Luma helps here because the generator renders infrared as 0.9 x luma + 0.1 x (material + dye)
    # (cmamlib/data/synth/config.py, ir_luma_weight): a property of the synthetic benchmark, not evidence for real
    # data, where the code's random channel stays the default.
    "cpu-long": {
        "description": "the best measured CPU synthetic setting (reconstruction): cpu-default with 24 stage-2 "
        "epochs, luma gray, stage-1 SIM 0.05, stage-2 temperature 0.1, identity-scale clustering",
        "stage1": {**S1_EARLIER, "gray_mode": "luma", "sim_weight": 0.05},
        "stage2": {
            **S2_EARLIER,
            "epochs": 24,
            "gray_mode": "luma",
            "temperature": 0.1,
            "k1": 5,
            "k2": 3,
            "min_samples": 2,
            "eps": 0.5,
        },
    },
    "paper-sysu-mm01": _paper(
        "sysu-mm01",
        (384, 128),
        40,
        300,
        "the authors' code at paper scale, Market-1501 -> SYSU-MM01, ResNet-50 384x128",
        **_sysu_kmeans(40),
    ),
    "paper-regdb": _paper(
        "regdb",
        (384, 128),
        40,
        300,
        "the authors' code at paper scale, Market-1501 -> RegDB (data.regdb_trial), ResNet-50 384x128",
        **_REGDB_KMEANS,
    ),
    "paper-sysu-mm02": _paper(
        "sysu-mm02",
        (288, 144),
        50,
        200,
        "paper scale at 288x144 with the peer USL-VI schedule (50 x 200), Market-1501 -> SYSU-MM02",
        **_sysu_kmeans(50),
    ),
    "paper-llcm": _paper(
        "llcm",
        (288, 144),
        50,
        200,
        "paper scale at 288x144 with the peer USL-VI schedule (50 x 200), Market-1501 -> LLCM",
    ),
}


def preset_names() -> list[str]:
    """Names of :data:`PRESETS`, in definition order."""
    return list(PRESETS)


# ----------------------------------------------------------------------------- typed building


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp))


_NONE_WORDS = ("null", "none", "~", "")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _split_list(s: str) -> list[str]:
    s = s.strip()
    if s[:1] in "[(" and s[-1:] in "])":
        s = s[1:-1]
    sep = "x" if ("x" in s and "," not in s and all(p.strip().isdigit() for p in s.split("x"))) else ","
    return [p.strip().strip("'\"") for p in s.split(sep) if p.strip()]


def _coerce(v: Any, tp: Any, key: str) -> Any:
    """``v`` (a typed YAML value, or a string from the command line) as type ``tp``."""
    bad = ConfigError(f"{key}={v!r}: expected {_type_name(tp)}")
    origin = get_origin(tp)
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and (v is None or (isinstance(v, str) and v.strip().lower() in _NONE_WORDS)):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if v is None or (isinstance(v, str) and v.strip().lower() in _NONE_WORDS):
            return None
        raise bad
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(v, bool):
            raise bad
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip().replace("_", ""))
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(v, bool):
            raise bad
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(v, str):
            return v
        raise bad
    if origin is tuple:
        args = get_args(tp)
        items = _split_list(v) if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], f"{key}[{i}]") for i, x in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(f"{key}={v!r}: expected {len(args)} values ({_type_name(tp)}), got {len(items)}")
        return tuple(_coerce(x, a, f"{key}[{i}]") for i, (x, a) in enumerate(zip(items, args)))
    if is_dataclass(tp):
        if isinstance(v, str):
            import yaml

            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                raise bad from None
        if not isinstance(v, Mapping):
            raise bad
        return _build(tp, v, key)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _unknown(key: str, name: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known keys here: {', '.join(known)}")


def _build(cls: type, d: Mapping[str, Any], where: str) -> Any:
    """Dataclass ``cls`` from a (partial) mapping: missing fields keep their defaults,
    unknown keys and ill-typed values raise :class:`ConfigError`."""
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kw = {}
    for k, v in d.items():
        key = f"{where}.{k}" if where else str(k)
        if k not in names:
            raise _unknown(key, str(k), names)
        kw[k] = _coerce(v, hints[k], key)
    return cls(**kw)


def _dump(obj: Any) -> Any:
    """Dataclass / tuple tree -> plain JSON/YAML data (tuples as lists)."""
    if is_dataclass(obj):
        return {f.name: _dump(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_dump(x) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): _dump(v) for k, v in obj.items()}
    return obj


def config_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain data (what ``config.yaml`` holds)."""
    return _dump(cfg)


# ----------------------------------------------------------------------------- loading


def _deep_merge(base: dict, new: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it ({e})") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({e})") from None
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"config file {path}: expected a mapping with data / stage1 / stage2 sections, got {type(d).__name__}"
        )
    return dict(d)


def _source_dict(name_or_path: str, seen: tuple[str, ...] = ()) -> tuple[dict, str]:
    """Nested override dict of a preset name or a YAML file (following ``base:``)."""
    if name_or_path in PRESETS:
        d = {k: v for k, v in copy.deepcopy(PRESETS[name_or_path]).items() if k != "description"}
        d["preset"] = name_or_path
        return d, name_or_path
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml", ".json") or p.exists()):
        close = difflib.get_close_matches(name_or_path, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"--config {name_or_path!r}: not a preset{hint} and not a file; presets: {', '.join(PRESETS)}"
        )
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    d = _read_yaml(p)
    d.pop("_run", None)  # a run's config.yaml can be used as a config
    own = d.get("preset")
    base = d.pop("base", None)
    if base is not None:
        b = str(base)
        if b not in PRESETS and not Path(b).is_absolute():
            b = str((p.parent / b)) if (p.parent / b).exists() else b
        if b in seen:
            raise ConfigError(f"config file {p}: 'base: {base}' is circular")
        parent, _ = _source_dict(b, seen + (str(p),))
        d = _deep_merge(parent, d)
    d["preset"] = own if own is not None else str(p)
    return d, str(p)


def parse_overrides(items: Sequence[str]) -> dict:
    """``["stage2.eps=0.5", "init_from=runs/s1"]`` -> nested dict of raw string values.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. stage2.eps=0.5)")
        key, value = item.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key part")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is also given a value")
            node = nxt
        node[parts[-1]] = value
    return out


def _from_dict(d: Mapping[str, Any]) -> RunConfig:
    cfg = _build(RunConfig, d, "")
    cfg.validate()
    return cfg


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> RunConfig:
    """Resolve a preset name or YAML file plus ``key=value`` overrides.

    Args:
        name_or_path: a key of :data:`PRESETS` or a YAML file (``base:`` allowed).
        overrides: ``section.field=value`` strings, applied last.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: unknown preset / file / key, a value of the wrong type, or a value
            the stage configs' ``validate()`` rejects (the message names it).
    """
    d, _ = _source_dict(name_or_path)
    d = _deep_merge(d, parse_overrides(overrides))
    return _from_dict(d)


def read_config(path: str | os.PathLike) -> RunConfig:
    """A ``config.yaml`` written by :func:`save_config` (a run's resolved config)."""
    d = _read_yaml(Path(path))
    d.pop("_run", None)
    return _from_dict(d)


def save_config(cfg: RunConfig, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the resolved config as YAML, atomically (temp file + rename).

    ``extra`` entries (e.g. ``command``, resolved dataset folders) are written under
    ``_run`` and ignored when the file is read back."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = config_dict(cfg)
    if extra:
        d["_run"] = _dump(dict(extra))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(d, sort_keys=False, default_flow_style=None))
    os.replace(tmp, path)
    return path


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["stage2.eps: 0.4 -> 0.5", ...]``: the leaves that differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, MISSING), new.get(k, MISSING)
        key = f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff_configs(a, b, key + ".")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{key}: {'(absent)' if a is MISSING else a!r} -> {'(absent)' if b is MISSING else b!r}")
    return out
