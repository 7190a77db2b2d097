"""Losses as small modules, each tested against a plain-loop oracle (tests/test_losses.py).

* :class:`CrossEntropyLabelSmooth` (Szegedy et al. 2016; the re-ID "bag of tricks",
  Luo et al. CVPRW 2019, epsilon 0.1).
* :class:`CircleClassifier`: the circle classifier head of fast-reid (``Circle`` /
  ``CircleSoftmax``; Sun et al., "Circle Loss", CVPR 2020), the identity head of the
  CMAM authors' stage 1, used with :class:`CrossEntropyLabelSmooth`.
* :class:`TripletLoss`: batch-hard triplet loss (Hermans et al. 2017) on Euclidean
  distances, hinge (``margin``) or soft margin (``margin=None``, fast-reid's
  ``TRI.MARGIN: 0``).
* :class:`SymmetricKL`: the CMAM mutual term on logits,
  ``symKL(p, q) = (KL(softmax q || softmax p) + KL(softmax p || softmax q)) / 2``
  with the teacher ``q`` detached (docs/method.md, "What the authors' released code does").
* :class:`SimilarityMatrixLoss`: squared difference of in-batch cosine similarity
  matrices of L2-normalised features, teacher detached (CMAM "sim" term).
* :class:`DistanceMatrixLoss`: squared difference of in-batch Euclidean distance
  matrices (the stage-2 mutual term of the authors' code).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed


class CrossEntropyLabelSmooth(nn.Module):
    """Cross entropy with label smoothing.

    ``loss = mean_b sum_c -q_bc log softmax(z_b)_c`` with
    ``q = (1 - eps) * onehot(y) + eps / C``.

    Args:
        epsilon: smoothing ``eps`` (0 gives plain cross entropy).
    Shapes:
        logits ``(B, C)``, targets ``(B,)`` int64 in ``[0, C)``.
    """

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        c = logits.shape[1]
        q = torch.full_like(logp, self.epsilon / c)
        q.scatter_(1, targets.view(-1, 1), 1 - self.epsilon + self.epsilon / c)
        return -(q * logp).sum(1).mean()


def circle_logits(cos: torch.Tensor, targets: torch.Tensor, scale: float = 64.0, margin: float = 0.35) -> torch.Tensor:
    """Circle-softmax logits ``(B, C)`` of cosines ``cos (B, C)`` (fast-reid ``Circle.forward``).

    ``alpha_p = max(0, 1 + m - cos)``, ``alpha_n = max(0, cos + m)`` (both detached),
    ``delta_p = 1 - m``, ``delta_n = m``; the target logit is
    ``s * alpha_p * (cos - delta_p)``, every other one ``s * alpha_n * (cos - delta_n)``.
    """
    c = cos.float()
    alpha_p = (1 + margin - c.detach()).clamp_min(0)
    alpha_n = (c.detach() + margin).clamp_min(0)
    s_p = scale * alpha_p * (c - (1 - margin))
    s_n = scale * alpha_n * (c - margin)
    onehot = F.one_hot(targets.long(), c.shape[1]).to(c.dtype)
    return onehot * s_p + (1 - onehot) * s_n


class CircleClassifier(nn.Module):
    """Circle classifier head: learnable class weights ``W (C, D)``, cosines of the
    L2-normalised features and weights, then :func:`circle_logits` (the logits depend
    on the targets, as in fast-reid; train with :class:`CrossEntropyLabelSmooth`).

    Args:
        in_features: ``D``.
        num_classes: ``C``.
        scale / margin: ``s`` and ``m`` (64 and 0.35, the CMAM authors' config).
    Shapes:
        features ``(B, D)``, targets ``(B,)`` int in ``[0, C)`` -> logits ``(B, C)`` float32.

    The weights start Kaiming uniform with ``a = sqrt(5)`` (bound ``1 / sqrt(D)``), as in the
    authors' code: ``BNneckHead`` applies ``weights_init_classifier`` to its ``Circle``
    (``fastreid/modeling/heads/bnneck_head.py:34``, ``fastreid/utils/weight_init.py:38-39``).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 64.0, margin: float = 0.35):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}, margin={self.margin}"
        )

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """Cosines ``(B, C)`` of the features and the class weights (float32)."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            return F.normalize(features.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return circle_logits(self.cosine(features), targets, self.scale, self.margin)


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``(M, N)`` of rows of ``x (M, D)`` and ``y (N, D)``."""
    x = x.float()
    y = y.float()
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None] - 2 * x @ y.t()
    return d2.clamp_min(1e-12).sqrt()


def cosine_sim_matrix(x: torch.Tensor) -> torch.Tensor:
    """In-batch cosine similarity matrix ``(B, B)`` of the L2-normalised rows of ``x (B, D)``."""
    z = F.normalize(x.float(), dim=1)
    return z @ z.t()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017).

    For each anchor: hardest positive (largest distance, same label) and hardest
    negative (smallest distance, other label);
    ``loss = mean_a max(0, d(a, p*) - d(a, n*) + margin)``, or with ``margin=None`` the
    soft margin ``mean_a softplus(d(a, p*) - d(a, n*))`` (fast-reid with ``TRI.MARGIN:
    0``, the CMAM authors' stage 1).  Anchors without a positive or a negative in the
    batch are skipped; labels ``-1`` are ignored.

    Args:
        margin: triplet margin (0.3, as re-ID baselines); None: soft margin.
        normalize: L2-normalise features first.
    Shapes:
        features ``(B, D)``, labels ``(B,)``.
    """

    def __init__(self, margin: float | None = 0.3, normalize: bool = False):
        super().__init__()
        self.margin = None if margin is None else float(margin)
        self.normalize = normalize

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels >= 0
        f, y = features[keep], labels[keep]
        if self.normalize:
            f = F.normalize(f.float(), dim=1)
        d = euclidean_dist(f, f)
        same = y[:, None] == y[None, :]
        eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
        pos = same & ~eye
        neg = ~same
        valid = pos.any(1) & neg.any(1)
        if not bool(valid.any()):
            return features.sum() * 0.0
        dp = torch.where(pos, d, torch.full_like(d, -1.0)).max(1).values
        dn = torch.where(neg, d, torch.full_like(d, float("inf"))).min(1).values
        if self.margin is None:
            return F.softplus(dp[valid] - dn[valid]).mean()
        return F.relu(dp[valid] - dn[valid] + self.margin).mean()


class SymmetricKL(nn.Module):
    """CMAM mutual term on logits: ``(KL(q || p) + KL(p || q)) / 2`` with ``q`` detached.

    ``p = softmax(student / T)``, ``q = softmax(teacher / T)``; KL summed over classes
    and averaged over the batch (``reduction="batchmean"``) or summed over the batch
    (``"sum"``).  Only the student receives gradients, unless ``detach_teacher=False``
    (then both inputs do). Under DDP a rank holds ``B / world`` rows and the gradients are
    averaged over the ranks, so the ``"sum"`` of its rows is scaled by the world size: the
    step is that of the sum over the global batch (:func:`cmamlib.distributed.world_size`).

    Shapes:
        student, teacher ``(B, C)`` logits.
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "batchmean", detach_teacher: bool = True):
        super().__init__()
        if reduction not in ("batchmean", "sum"):
            raise ValueError(f"reduction {reduction!r}: expected 'batchmean' or 'sum'")
        self.t = float(temperature)
        self.reduction = reduction
        self.detach_teacher = bool(detach_teacher)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        lp = F.log_softmax(student.float() / self.t, dim=1)
        lq = F.log_softmax((teacher.detach() if self.detach_teacher else teacher).float() / self.t, dim=1)
        p, q = lp.exp(), lq.exp()
        kl_qp = (q * (lq - lp)).sum(1)
        kl_pq = (p * (lp - lq)).sum(1)
        per = 0.5 * (kl_qp + kl_pq)
        return per.mean() if self.reduction == "batchmean" else per.sum() * distributed.world_size()


class SimilarityMatrixLoss(nn.Module):
    """CMAM "sim" term: ``sum_ij (G(teacher)_ij - G(student)_ij)^2``, teacher detached,
    ``G`` the in-batch cosine similarity matrix of L2-normalised features.

    Args:
        reduction: ``"sum"`` (the authors' code) or ``"mean"`` over the ``B x B`` entries.
    Shapes:
        student, teacher ``(B, D)`` features (the two may have different ``D``).
    """

    def __init__(self, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction {reduction!r}: expected 'sum' or 'mean'")
        self.reduction = reduction

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        diff = (cosine_sim_matrix(teacher.detach()) - cosine_sim_matrix(student)) ** 2
        return diff.sum() if self.reduction == "sum" else diff.mean()


class DistanceMatrixLoss(nn.Module):
    """Stage-2 mutual term: squared difference of two models' in-batch Euclidean distance
    matrices of L2-normalised features, averaged (``reduction="mean"``) or summed
    (``"sum"``, the authors' code) over the ``B x B`` entries.

    With ``detach_teacher=False`` (the authors' code) both models receive gradients.
    Shapes:
        a, b ``(B, D)`` features.
    """

    def __init__(self, detach_teacher: bool = False, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction {reduction!r}: expected 'sum' or 'mean'")
        self.detach_teacher = detach_teacher
        self.reduction = reduction

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        za = F.normalize(a.float(), dim=1)
        zb = F.normalize(b.float(), dim=1)
        if self.detach_teacher:
            zb = zb.detach()
        diff = (euclidean_dist(za, za) - euclidean_dist(zb, zb)) ** 2
        return diff.sum() if self.reduction == "sum" else diff.mean()
