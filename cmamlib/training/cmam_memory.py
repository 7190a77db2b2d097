"""Memory mode of stage 1 (``identity_loss="memory"``, the earlier reconstruction): per
epoch, features of every source image (:func:`train_mode_features` or eval mode), Jaccard
+ DBSCAN pseudo labels (shared or per network, or a label file) and cluster memories
initialised at the centroids (:func:`memory_epoch`)."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..clustering import label_quality, pseudo_labels
from ..data.loading import normalize as normalize_images
from ..data.records import Record
from ..data.transforms import to_float
from ..memory import ClusterMemory
from ..models import ReIDNet
from .cmam_config import CMAMConfig
from .common import (
    autocast,
)
from .loop import (
    epoch_features,
    fuse,
    gray_transform,
)


@torch.no_grad()
def train_mode_features(
    model: ReIDNet,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    gray: str | None = None,
    seed: int = 0,
    amp: bool = False,
    amp_dtype: str = "float16",
) -> torch.Tensor:
    """L2-normalised train-mode BNNeck features ``(N, D)`` (BatchNorm on each batch's own
    statistics, no flip) of uint8 images, in order; ``gray``: a gray mode to feed the
    gray view (seeded, as :func:`cmamlib.training.loop.extract`). The BatchNorm running
    statistics and the model's mode are left as they were. Batches are split evenly so
    that none holds a single image (train-mode BatchNorm needs two)."""
    n = images.shape[0]
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    tf = gray_transform(gray, seed) if gray else None
    chunks = np.array_split(np.arange(n), max(1, int(np.ceil(n / max(batch_size, 2)))))
    out = []
    try:
        for idx in chunks:
            x = to_float(images[torch.as_tensor(idx)].to(device))
            if tf is not None:
                x = tf(x)
            with autocast(device, amp, amp_dtype):
                f = model(normalize_images(x)).bn_feat
            out.append(F.normalize(f.float(), dim=1).cpu())
    finally:
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
        model.train(was_training)
    return torch.cat(out)


def memory_epoch(
    cfg: CMAMConfig,
    epoch: int,
    te: float,
    model_rg: ReIDNet,
    model_g: ReIDNet | None,
    images: torch.Tensor,
    device: torch.device,
    progress: bool,
    source_records: Sequence[Record],
    file_labels: np.ndarray | None,
    file_sha: str | None,
    cams: np.ndarray | None,
    true_ids: np.ndarray,
    shared_labels: bool,
):
    """Memory mode, start of an epoch: features, pseudo labels (or the file's), and the
    two cluster memories initialised at the cluster centroids. Returns ``(labels,
    labels_g, mem_rg, mem_g, log_row, instance_phase)``."""
    f_rgb = epoch_features(model_rg, images, cfg, device, progress=progress, desc="features F_rg")
    f_gray = (
        epoch_features(model_g, images, cfg, device, gray_epoch=epoch, progress=progress, desc="features F_g")
        if model_g is not None
        else None
    )
    instance_phase = epoch < cfg.instance_epochs

    def _pseudo_labels() -> tuple[np.ndarray, np.ndarray]:  # on rank 0 in a distributed run
        if instance_phase:  # every image its own class (instance discrimination warm-up)
            labels = np.arange(len(source_records))
            labels_g = labels
        elif file_labels is not None:  # another method's labels, read once (the authors: PPLR's)
            labels = labels_g = file_labels
        elif cfg.label_space == "shared":
            labels = pseudo_labels(
                fuse([f for f in (f_rgb, f_gray) if f is not None], cfg.fusion),
                cfg.k1,
                cfg.k2,
                cfg.eps,
                cfg.min_samples,
                camids=cams,
                knn_backend=cfg.knn_backend,
            )
            labels_g = labels
        else:
            labels = pseudo_labels(
                f_rgb, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, camids=cams, knn_backend=cfg.knn_backend
            )
            labels_g = (
                pseudo_labels(
                    f_gray, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, camids=cams, knn_backend=cfg.knn_backend
                )
                if f_gray is not None
                else labels
            )
        return labels, labels_g

    labels, labels_g = dist.run_on_main(_pseudo_labels)
    n_clusters = int(labels.max()) + 1
    p = cfg.batch_size // cfg.num_instances
    if n_clusters < p and file_labels is not None and not instance_phase:
        raise RuntimeError(
            f"stage 1: label_file {cfg.label_file} has {n_clusters} labels, fewer than the P={p} "
            "identities a batch needs; lower batch_size / num_instances"
        )
    if n_clusters < p:
        raise RuntimeError(
            f"stage 1, epoch {epoch}: DBSCAN found {n_clusters} clusters in {len(labels)} source images "
            f"({float((labels < 0).mean()):.0%} noise), fewer than the P={p} identities a batch needs; "
            f"raise eps (now {cfg.eps}), lower min_samples ({cfg.min_samples}) or batch_size / num_instances"
        )
    if cfg.memory_init == "train":  # memories from train-mode features, the clustering's stay eval-mode
        kw = dict(amp=cfg.amp, amp_dtype=cfg.amp_dtype)
        f_rgb = train_mode_features(model_rg, images, device, cfg.eval_batch_size, **kw)
        if model_g is not None:
            f_gray = train_mode_features(
                model_g, images, device, cfg.eval_batch_size, gray=cfg.gray_mode, seed=cfg.seed * 1000 + epoch, **kw
            )
    mem_rg = ClusterMemory(model_rg.feat_dim, n_clusters, cfg.temperature, cfg.memory_momentum, cfg.memory_mode).to(
        device
    )
    mem_rg.reset(f_rgb.to(device), torch.from_numpy(labels).to(device))
    mem_g = None
    if model_g is not None:
        mem_g = ClusterMemory(
            model_g.feat_dim, int(labels_g.max()) + 1, cfg.temperature, cfg.memory_momentum, cfg.memory_mode
        ).to(device)
        mem_g.reset(f_gray.to(device), torch.from_numpy(labels_g).to(device))
    row: dict = {
        "epoch": epoch,
        "phase": "instance" if instance_phase else "clusters",
        "cluster_seconds": time.time() - te,
    }
    row.update({f"labels_{k}": v for k, v in label_quality(labels, true_ids).items()})
    if file_sha is not None:
        row["label_file_sha256"] = file_sha
    if not shared_labels and model_g is not None:
        row.update({f"labels_g_{k}": v for k, v in label_quality(labels_g, true_ids).items()})
    return labels, labels_g, mem_rg, mem_g, row, instance_phase
