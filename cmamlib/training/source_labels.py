"""Source pseudo labels, made once before stage 1 (docs/method.md, "Stage 1", step 0).

The CMAM authors did not cluster the source inside stage 1: they ran an unsupervised
re-ID method (PPLR) on Market-1501 and trained stage 1 on its saved labels, fixed.
:func:`run_source_labels` is that step here: an unsupervised single-modality run on the
source RGB images in the style of cluster-contrast (Dai et al., ACCV 2022: Jaccard +
DBSCAN pseudo labels, a cluster memory, re-clustered every epoch) -- :func:`run_cmam`
with one network, no gray view and ``identity_loss="memory"`` -- then one last
clustering of the trained network's features, written as a ``path,label`` file
(:mod:`cmamlib.data.label_files`, ``-1`` = noise) for ``CMAMConfig.label_file``.

Beside the label file, ``<file>.json`` records the config, the label quality against
the true source ids (ARI / NMI / purity, a diagnostic: the ids never enter training)
and the time; a second call with the same config reuses the file instead of retraining.
A user-supplied label file (e.g. PPLR's) replaces this step.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import distributed as dist
from ..clustering import label_quality, pseudo_labels
from ..data.label_files import read_label_file, write_label_file
from ..data.records import Record
from ..utils import resolve_device
from .cmam import CMAMConfig, run_cmam
from .common import RESUME_FREE_FIELDS, config_to_dict
from .loop import epoch_features

__all__ = ["SourceLabelsResult", "run_source_labels", "source_label_config", "source_label_key"]

#: Config fields that do not change the labels (hardware) or that the source-label run
#: sets itself; left out of :func:`source_label_key`.
_KEY_FREE = set(RESUME_FREE_FIELDS) | {"progress"}


@dataclass
class SourceLabelsResult:
    """Output of :func:`run_source_labels`.

    Attributes:
        path: the ``path,label`` file written (or reused).
        labels: ``(N,)`` labels of the records, ``0..K-1``, ``-1`` = noise.
        quality: ``clusters``, ``noise_fraction``, ``ari``, ``nmi``, ``purity`` against the
            true source ids (diagnostic only).
        history: the clustering run's per-epoch log rows (empty when reused).
        seconds: wall time of the run (that of the first call when reused).
        reused: the file was already there with the same config.
        config: the clustering run's config (:func:`source_label_config`).
    """

    path: Path
    labels: np.ndarray
    quality: dict
    history: list[dict]
    seconds: float
    reused: bool
    config: CMAMConfig


def source_label_config(base: CMAMConfig) -> CMAMConfig:
    """The config of the source-label run derived from a stage-1 config: the same
    backbone, images, batches, epochs, optimiser and Jaccard + DBSCAN settings, as one
    RGB network (``use_gray_view=False, use_aux_gray=False``) with the cluster memory
    re-clustered every epoch (``identity_loss="memory"``), no label file, one run, no
    mutual terms, no triplet (cluster-contrast trains the memory loss alone)."""
    return replace(
        base,
        use_gray_view=False,
        use_aux_gray=False,
        identity_loss="memory",
        label_file=None,
        label_space="shared",
        schedule="one_run",
        symmetric=False,
        tie_rgb_to_gray=False,
        ema=False,
        triplet_weight=0.0,
        instance_epochs=0,
    )


def source_label_key(config: CMAMConfig) -> str:
    """A short hash of the fields of ``config`` that decide the labels (hardware fields
    left out): runs with the same key make the same label file."""
    d = {k: v for k, v in config_to_dict(config).items() if k not in _KEY_FREE}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _common_root(records: Sequence[Record]) -> str | None:
    dirs = {os.path.dirname(r.path) for r in records}
    try:
        root = os.path.commonpath(sorted(dirs))
    except ValueError:  # mixed absolute / relative paths
        return None
    return root if root else None


def run_source_labels(
    config: CMAMConfig,
    source_records: Sequence[Record],
    out_path: str | os.PathLike,
    images: torch.Tensor | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    derive: bool = True,
) -> SourceLabelsResult:
    """Cluster the unlabeled source RGB images into pseudo labels and write them to
    ``out_path`` as a ``path,label`` file.

    Args:
        config: a stage-1 :class:`CMAMConfig`; with ``derive`` (default) it goes through
            :func:`source_label_config`, otherwise it is used as given (it must then be a
            memory-mode config without label file).
        source_records: the source images (``pid`` feeds the quality diagnostic only).
        out_path: the label file; ``<out_path>.json`` gets the summary. When both exist
            and the summary's key (:func:`source_label_key`) matches, they are reused.
        images: optional pre-decoded ``(N, 3, H, W)`` uint8 images of the records.
        run_dir: folder of the clustering run's checkpoint and log (resumed when
            interrupted); None keeps it in memory.
        progress: progress bars.

    Returns:
        :class:`SourceLabelsResult`.
    """
    cfg = source_label_config(config) if derive else config
    if cfg.identity_loss != "memory" or cfg.label_file is not None:
        raise ValueError("run_source_labels: the clustering run needs identity_loss='memory' and no label_file")
    out_path = Path(out_path)
    meta_path = out_path.with_name(out_path.name + ".json")
    key = source_label_key(cfg)
    true_ids = np.array([r.pid for r in source_records])  # diagnostics only
    if out_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and meta.get("images") == len(source_records):
            labels = read_label_file(out_path, source_records)
            return SourceLabelsResult(
                out_path, labels, label_quality(labels, true_ids), [], float(meta.get("seconds", 0.0)), True, cfg
            )
    t0 = time.time()
    res = run_cmam(cfg, source_records, images, run_dir=run_dir, resume=run_dir is not None, progress=progress)
    if images is None:
        from ..data.loading import load_images

        images = load_images(source_records, cfg.image_size, progress=progress, desc="source images")
    device = dist.local_device(resolve_device(cfg.device))
    # the final labels: one more clustering, of the trained network's features
    feats = epoch_features(res.model_rg, images, cfg, device, progress=progress, desc="features (final labels)")
    cams = np.array([r.camid for r in source_records]) if cfg.camera_centering else None

    def _cluster() -> np.ndarray:
        return pseudo_labels(feats, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, camids=cams, knn_backend=cfg.knn_backend)

    labels = dist.run_on_main(_cluster)
    quality = label_quality(labels, true_ids)
    seconds = time.time() - t0
    if dist.is_main():
        write_label_file(out_path, source_records, labels, root=_common_root(source_records))
        meta = {
            "key": key,
            "images": len(source_records),
            "quality": quality,
            "seconds": seconds,
            "last_epoch": {
                k: v for k, v in (res.history[-1] if res.history else {}).items() if k.startswith("labels_")
            },
            "config": config_to_dict(cfg),
        }
        tmp = meta_path.with_name(meta_path.name + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_path)
    dist.barrier()
    return SourceLabelsResult(out_path, labels, quality, res.history, seconds, False, cfg)
