"""The losses of one stage-1 step (:func:`step_losses`): per branch the identity term
(circle classifier + label-smoothed CE + triplet, or the cluster memory), and the
asymmetric mutual terms ``F_rg(RGB) -> F_g(gray) -> F_rg(gray)`` (KL on identity logits,
SIM on in-batch similarity matrices); :func:`update_memories` applies a memory-mode
step's momentum updates. Formulas: :mod:`cmamlib.training.cmam`'s docstring."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed as dist
from ..losses import CrossEntropyLabelSmooth, SimilarityMatrixLoss, SymmetricKL, TripletLoss
from ..memory import ClusterMemory
from .cmam_config import CMAMConfig
from .common import (
    autocast,
)


def step_losses(
    cfg: CMAMConfig,
    x: torch.Tensor,
    xg: torch.Tensor | None,
    y: torch.Tensor,
    y_g: torch.Tensor,
    model_rg: nn.Module,
    model_g: nn.Module | None,
    heads: tuple,
    ema_rg: nn.Module | None,
    ema_g: nn.Module | None,
    kl: SymmetricKL,
    sim: SimilarityMatrixLoss,
    tri: TripletLoss,
    ce_ls: CrossEntropyLabelSmooth,
    use_kl: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """All loss terms of one batch (see the module docstring). Keys starting with ``_``
    carry detached features for the memory updates, not losses.

    ``heads``: the identity heads ``(of F_rg, of F_g)``: circle classifiers
    (``identity_loss="classifier"``: logits ``head(f, y)``, label-smoothed CE, loss keys
    ``ce_*``) or cluster memories (``"memory"``: logits ``mem.logits(f)``, plain CE, keys
    ``mem_*``).

    ``x`` / ``xg``: the (augmented, normalised) batch and its gray view (None without
    the gray view). In a distributed run they are this rank's slice of the global batch;
    the in-batch matrix terms (SIM, triplet) use features gathered from every rank
    (:func:`cmamlib.distributed.gather_with_grad`, the identity in one process) and the
    memory updates the features of the whole global batch."""
    b = x.shape[0]
    out: dict[str, torch.Tensor] = {}
    gather = dist.gather_with_grad
    classifier = cfg.identity_loss == "classifier"
    head_rg, head_g = heads
    name = "ce" if classifier else "mem"

    def logits(head, f: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return head(f, yy) if classifier else head.logits(f)

    def id_loss(z: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return ce_ls(z, yy) if classifier else F.cross_entropy(z, yy)

    def tri_feat(bn: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return bn if cfg.triplet_feature == "post_bn" else pooled

    with autocast(device, cfg.amp, cfg.amp_dtype):
        if cfg.use_gray_view and cfg.view_forward == "separate":  # BN batch statistics per view (the code)
            o, og_rg = model_rg(x), model_rg(xg)
            f_rgb, f_rgg, p_rgb, p_rgg = o.bn_feat, og_rg.bn_feat, o.feat, og_rg.feat
        elif cfg.use_gray_view:
            o = model_rg(torch.cat([x, xg]))
            f_rgb, f_rgg = o.bn_feat[:b], o.bn_feat[b:]
            p_rgb, p_rgg = o.feat[:b], o.feat[b:]
        else:
            o = model_rg(x)
            f_rgb, f_rgg, p_rgb, p_rgg = o.bn_feat, None, o.feat, None
        z_rgb = logits(head_rg, f_rgb, y)
        out[f"{name}_rg_rgb"] = id_loss(z_rgb, y)
        y_all = dist.all_gather_tensor(y)
        if cfg.triplet_weight > 0:
            out["tri_rg_rgb"] = cfg.triplet_weight * tri(gather(tri_feat(f_rgb, p_rgb)), y_all)
        z_rgg = None
        if f_rgg is not None:
            z_rgg = logits(head_rg, f_rgg, y)
            out[f"{name}_rg_gray"] = id_loss(z_rgg, y)
            if cfg.triplet_weight > 0:
                out["tri_rg_gray"] = cfg.triplet_weight * tri(gather(tri_feat(f_rgg, p_rgg)), y_all)
        if not classifier:  # memory update with the global batch
            if f_rgg is not None and cfg.rg_memory_update == "view_mean":  # one row per image
                both = F.normalize(f_rgb.detach(), dim=1) + F.normalize(f_rgg.detach(), dim=1)
                out["_upd_rg"], out["_upd_rg_y"] = dist.all_gather_tensor(0.5 * both), y_all
            else:  # "rgb_then_gray" (or no gray view): all RGB rows, then all gray rows
                views = [f for f in (f_rgb, f_rgg) if f is not None]
                out["_upd_rg"] = torch.cat([dist.all_gather_tensor(f.detach()) for f in views])
                out["_upd_rg_y"] = torch.cat([y_all] * len(views))
        if model_g is not None:
            og = model_g(xg)
            f_g, p_g = og.bn_feat, og.feat
            keep = y_g >= 0
            yk = y_g.clamp_min(0)  # classifier mode: the fixed labels, noise never sampled
            z_g = logits(head_g, f_g, yk)
            out[f"{name}_g"] = id_loss(z_g[keep], y_g[keep]) if bool(keep.any()) else f_g.sum() * 0
            if cfg.triplet_weight > 0:
                out["tri_g"] = cfg.triplet_weight * tri(gather(tri_feat(f_g, p_g)), dist.all_gather_tensor(y_g))
            if not classifier:
                out["_upd_g"] = dist.all_gather_tensor(f_g[keep].detach())
                out["_upd_g_y"] = dist.all_gather_tensor(y_g[keep])
            # teachers (detached; EMA copies when enabled)
            if ema_rg is not None:
                with torch.no_grad():
                    if cfg.view_forward == "separate":
                        t_rgb, t_rgg = ema_rg(x).bn_feat, ema_rg(xg).bn_feat
                    else:
                        t_rg = ema_rg(torch.cat([x, xg])).bn_feat
                        t_rgb, t_rgg = t_rg[:b], t_rg[b:]
                    t_g = ema_g(xg).bn_feat
            else:
                t_rgb, t_rgg, t_g = f_rgb.detach(), f_rgg.detach(), f_g.detach()
            t_rg_view = t_rgb if cfg.rg2g_teacher_view == "rgb" else t_rgg
            # global-batch features of the similarity matrices (these tensors themselves in one process)
            gf_g, gf_rgg = gather(f_g), gather(f_rgg)
            gt_g = gf_g.detach() if ema_rg is None else gather(t_g)
            gt_rg_view = gather(t_rg_view)
            # F_rg(RGB) -> F_g(gray)
            rg2g = cfg.sim_weight * sim(gf_g, gt_rg_view)
            g2rg = cfg.sim_weight * sim(gf_rgg, gt_g)
            if use_kl:  # teachers' logits through their own network's head (detached in kl)
                rg2g = rg2g + cfg.kl_weight * kl(z_g, logits(head_rg, t_rg_view, y))
                g2rg = g2rg + cfg.kl_weight * kl(z_rgg, logits(head_g, t_g, yk))
            out["rg2g"] = cfg.lambda_rg2g * rg2g
            out["g2rg"] = cfg.lambda_g2rg * g2rg
            if cfg.symmetric:  # the RGB view becomes a student of F_g too
                sym = cfg.sim_weight * sim(gather(f_rgb), gt_g)
                if use_kl:
                    sym = sym + cfg.kl_weight * kl(z_rgb, logits(head_g, t_g, yk))
                out["g2rgb"] = cfg.lambda_g2rg * sym
        if cfg.tie_rgb_to_gray and f_rgg is not None:
            tie = cfg.sim_weight * sim(gather(f_rgb), gather(f_rgg).detach())
            if use_kl:
                tie = tie + cfg.kl_weight * kl(z_rgb, z_rgg.detach())
            out["tie"] = cfg.tie_weight * tie
    return out


def update_memories(mem_rg: ClusterMemory, mem_g: ClusterMemory | None, terms: dict) -> None:
    """Momentum updates of the memories from the ``_upd_*`` entries of ``terms`` (popped)."""
    mem_rg.update(terms.pop("_upd_rg"), terms.pop("_upd_rg_y"))
    upd_g, upd_y = terms.pop("_upd_g", None), terms.pop("_upd_g_y", None)
    if mem_g is not None and upd_g is not None and len(upd_g):
        mem_g.update(upd_g, upd_y)
