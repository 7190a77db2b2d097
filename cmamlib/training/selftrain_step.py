"""The losses of one stage-2 training step (:func:`_step_losses`): each model's memory
loss, the mutual KL between the two models' memory logits and the distance-matrix term."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..losses import DistanceMatrixLoss, SymmetricKL
from ..memory import ClusterMemory
from .common import autocast
from .selftrain_config import SelfTrainConfig


def _kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mode: str,
    sym: SymmetricKL,
    detach: bool = True,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """One direction of the mutual KL, ``sum_c q_c (log q_c - log p_c)`` per row with
    ``q = softmax(teacher)``, ``p = softmax(student)`` (``mode="plain"``), averaged
    (``"batchmean"``) or summed (``"sum"``, the code) over the rows; ``detach``: only the
    student gets gradients (the code: both). ``mode="symmetric"``: ``sym``
    (:class:`cmamlib.losses.SymmetricKL`, built with the same detach / reduction). Under
    DDP the ``"sum"`` of a rank's rows is scaled by the world size, as in ``SymmetricKL``:
    the ranks' averaged gradient is that of the sum over the global batch."""
    if mode == "symmetric":
        return sym(student, teacher)
    lq = F.log_softmax((teacher.detach() if detach else teacher).float(), 1)
    kl = F.kl_div(F.log_softmax(student.float(), 1), lq, reduction=reduction, log_target=True)
    return kl * distributed.world_size() if reduction == "sum" else kl


def _step_losses(
    cfg: SelfTrainConfig,
    x: torch.Tensor,
    xg: torch.Tensor | None,
    y: torch.Tensor,
    model_a: nn.Module,
    model_b: nn.Module | None,
    mem_a: ClusterMemory,
    mem_b: ClusterMemory | None,
    ema_a: nn.Module | None,
    ema_b: nn.Module | None,
    kl_sym: SymmetricKL,
    dist: DistanceMatrixLoss,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """Loss terms of one batch (module docstring) and the detached features of the
    memory updates ``(A, B)``.

    ``x`` / ``xg``: the (augmented, normalised) batch and the gray view fed to B (None
    without B). In a distributed run they are this rank's slice of the global batch; the
    distance-matrix term uses features gathered from every rank
    (:func:`cmamlib.distributed.gather_with_grad`, the identity in one process), and the
    returned memory-update features are those of the whole global batch."""
    out: dict[str, torch.Tensor] = {}
    gather = distributed.gather_with_grad
    with autocast(device, cfg.amp, cfg.amp_dtype):
        f_a = model_a(x).bn_feat
        z_a = mem_a.logits(f_a)
        out["mem_a"] = F.cross_entropy(z_a, y)
        if model_b is None:
            return out, (distributed.all_gather_tensor(f_a.detach()), None)
        f_b = model_b(xg).bn_feat
        z_b = mem_b.logits(f_b)
        out["mem_b"] = F.cross_entropy(z_b, y)
        if ema_a is not None:
            with torch.no_grad():
                t_a = ema_a(x).bn_feat
                t_b = ema_b(xg).bn_feat
            tz_a, tz_b = mem_a.logits(t_a), mem_b.logits(t_b)
        else:
            t_a, t_b = f_a.detach(), f_b.detach()
            # kl_detach=False (the code): each direction's teacher keeps its graph
            tz_a, tz_b = (z_a.detach(), z_b.detach()) if cfg.kl_detach else (z_a, z_b)
        if cfg.kl_weight > 0:
            detach, red = cfg.kl_detach, cfg.kl_reduction
            out["kl_a"] = cfg.kl_weight * _kl(z_a, tz_b, cfg.kl_mode, kl_sym, detach, red)  # A learns from B
            out["kl_b"] = cfg.kl_weight * _kl(z_b, tz_a, cfg.kl_mode, kl_sym, detach, red)  # B learns from A
        if cfg.dist_weight > 0:
            ga, gb = gather(f_a), gather(f_b)  # global batch
            if ema_a is not None:  # each model towards the other's EMA teacher
                out["dist"] = cfg.dist_weight * 0.5 * (dist(ga, gather(t_b)) + dist(gb, gather(t_a)))
            else:  # the code: one term, both models receive its gradient
                out["dist"] = cfg.dist_weight * dist(ga, gb)
    return out, (distributed.all_gather_tensor(f_a.detach()), distributed.all_gather_tensor(f_b.detach()))
