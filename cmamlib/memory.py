"""Cluster memory: a non-parametric classifier over pseudo-label centroids.

:class:`ClusterMemory` is the memory of cluster-contrast re-ID (Dai et al., "Cluster
Contrast for Unsupervised Person Re-Identification", ACCV 2022; ``ClusterMemory`` with
the ``cm`` / ``cm_hard`` autograd functions in ``clustercontrast/models/cm.py``), which
the CMAM authors' code uses in both stages (temperature 0.05, momentum 0.2).

* One L2-normalised centroid ``m_c`` per cluster, set by :meth:`ClusterMemory.reset`
  from the features of a (re-)clustering.
* Logits ``z_bc = <x_b, m_c> / tau`` of the L2-normalised inputs ``x_b``; loss
  ``cross_entropy(z, y)`` (the ClusterNCE loss, eq. 2 of the paper).
* Momentum update after each step (cluster-contrast runs it in the backward pass, after
  the input gradient, so the loss and its gradient see the memory *before* the
  update):

  - ``mode="mean"`` (``cm``): sequentially over the batch, in batch order,
    ``m_y <- m_y * mu + (1 - mu) x;  m_y <- m_y / |m_y|`` for every sample ``(x, y)``.
    Here vectorised over clusters: step ``r`` updates, at once, every cluster with an
    ``r``-th sample in the batch, so there are as many steps as the largest number of
    samples of one cluster in the batch (K of a P x K sampler), each doing the same
    arithmetic as the sequential loop.
  - ``mode="hard"`` (``cm_hard``): per cluster in the batch, the sample least similar
    to its centroid (first one on ties), ``m_y <- normalize(mu m_y + (1 - mu) x_hard)``.

Tested against the loop of ``CM.backward`` in ``tests/test_memory.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ClusterMemory"]

MODES = ("mean", "hard")


class ClusterMemory(nn.Module):
    """Cluster-contrast memory with momentum-updated centroids.

    Args:
        num_features: feature size ``D``.
        num_clusters: initial number of clusters ``C`` (zeros until :meth:`reset`).
        temperature: ``tau`` of the logits (0.05, cluster-contrast and the authors' code).
        momentum: ``mu``, weight of the old centroid in an update (0.2).
        mode: ``"mean"`` (sequential per-sample update, cluster-contrast ``cm``) or
            ``"hard"`` (hardest sample per cluster, ``cm_hard``).

    Buffers:
        features: ``(C, D)`` float32 L2-normalised centroids; follows ``.to(device)``
            and is saved in ``state_dict``.

    Inputs may be float16 / bfloat16 or come from an autocast region: they are cast to
    float32 and the logits are computed with autocast disabled.
    """

    features: torch.Tensor

    def __init__(
        self,
        num_features: int,
        num_clusters: int = 0,
        temperature: float = 0.05,
        momentum: float = 0.2,
        mode: str = "mean",
    ):
        super().__init__()
        if int(num_features) != num_features or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if int(num_clusters) != num_clusters or num_clusters < 0:
            raise ValueError(f"num_clusters must be a non-negative integer, got {num_clusters!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        self.num_features = int(num_features)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.mode = mode
        self.register_buffer("features", torch.zeros(int(num_clusters), self.num_features))

    @property
    def num_clusters(self) -> int:
        return int(self.features.shape[0])

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, num_clusters={self.num_clusters}, "
            f"temperature={self.temperature}, momentum={self.momentum}, mode={self.mode!r}"
        )

    # ----------------------------------------------------------------------------------
    # checks
    # ----------------------------------------------------------------------------------

    def _inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 2 or inputs.shape[1] != self.num_features:
            raise ValueError(f"inputs must be (B, {self.num_features}), got shape {tuple(inputs.shape)}")
        return F.normalize(inputs.float(), dim=1)

    def _targets(self, targets: torch.Tensor, batch: int) -> torch.Tensor:
        if targets.ndim != 1 or targets.shape[0] != batch:
            raise ValueError(f"targets must be ({batch},) for {batch} inputs, got shape {tuple(targets.shape)}")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer cluster labels, got dtype {targets.dtype}")
        c = self.num_clusters
        if batch and (int(targets.min()) < 0 or int(targets.max()) >= c):
            bad = targets[(targets < 0) | (targets >= c)].unique()[:5].tolist()
            raise ValueError(f"targets {bad} out of range: the memory holds clusters 0..{c - 1}")
        return targets.long()

    # ----------------------------------------------------------------------------------
    # API
    # ----------------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the memory to the L2-normalised mean feature of every cluster.

        Args:
            features: ``(N, D)`` float (pass L2-normalised features, as cluster-contrast
                does; rows are averaged as given).
            labels: ``(N,)`` int, ``-1`` for noise (skipped), clusters ``0..C-1`` each
                with at least one sample.
        """
        features = torch.as_tensor(features)
        labels = torch.as_tensor(labels)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"features must be (N, {self.num_features}), got shape {tuple(features.shape)}")
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels must be ({features.shape[0]},) for {features.shape[0]} features, "
                f"got shape {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer cluster labels, got dtype {labels.dtype}")
        dev = self.features.device
        x = features.detach().to(dev, torch.float32)
        y = labels.to(dev).long()
        if y.numel() and int(y.min()) < -1:
            raise ValueError(f"labels below -1 (min {int(y.min())}); -1 is the only noise label")
        keep = y >= 0
        if not bool(keep.any()):
            raise ValueError("labels hold no cluster (all noise): nothing to put in the memory")
        y, x = y[keep], x[keep]
        c = int(y.max()) + 1
        counts = torch.bincount(y, minlength=c)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
            raise ValueError(
                f"labels must be 0..C-1 with every cluster present: ids {missing} missing below max {c - 1}"
            )
        sums = torch.zeros(c, self.num_features, device=dev).index_add_(0, y, x)
        self.features = F.normalize(sums / counts[:, None].float(), dim=1)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C) = normalize(inputs) @ memory.T / tau`` (float32, no update).

        The memory enters as a snapshot, so a later :meth:`update` does not change the
        gradient of these logits (the memory itself gets none).
        """
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            x = self._inputs(inputs)
            return x @ self.features.detach().clone().t() / self.temperature

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        update: bool | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ClusterNCE loss, then the momentum update (as cluster-contrast).

        Args:
            inputs: ``(B, D)`` features (normalised here).
            targets: ``(B,)`` int cluster labels in ``0..C-1``.
            update: update the memory after computing the loss; ``None`` (default):
                when the module is in training mode.
            return_logits: also return the ``(B, C)`` logits (pre-update memory).

        Returns:
            scalar loss ``cross_entropy(logits, targets)``, or ``(loss, logits)``.
        """
        t = self._targets(targets, inputs.shape[0])
        z = self.logits(inputs)
        loss = F.cross_entropy(z, t)
        if self.training if update is None else update:
            self.update(inputs, t)
        return (loss, z) if return_logits else loss

    @torch.no_grad()
    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Momentum update of the centroids of the batch's clusters (in place).

        ``inputs (B, D)`` are L2-normalised first (as :meth:`forward` does); the rule
        follows ``mode`` (module docstring).
        """
        t = self._targets(targets, inputs.shape[0])
        if t.numel() == 0:
            return
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            x = self._inputs(inputs.detach())
        mu = self.momentum
        mem = self.features
        if self.mode == "hard":
            b = t.shape[0]
            sim = (x * mem[t]).sum(1)
            cmin = torch.full((self.num_clusters,), float("inf"), device=x.device)
            cmin = cmin.scatter_reduce(0, t, sim, reduce="amin")
            pos = torch.arange(b, device=x.device)
            cand = torch.where(sim == cmin[t], pos, torch.full_like(pos, b))
            first = torch.full((self.num_clusters,), b, device=x.device, dtype=torch.long)
            first = first.scatter_reduce(0, t, cand, reduce="amin")
            cls = t.unique()
            m = mem[cls] * mu + (1.0 - mu) * x[first[cls]]
            mem[cls] = m / m.norm(dim=1, keepdim=True)
            return
        # "mean": rank of every sample among the batch samples of its cluster
        order = torch.argsort(t, stable=True)
        ts = t[order]
        pos = torch.arange(t.shape[0], device=t.device)
        is_start = torch.ones_like(ts, dtype=torch.bool)
        is_start[1:] = ts[1:] != ts[:-1]
        start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), 0).values
        rank = pos - start  # rank within cluster, in batch order (stable sort)
        steps = int(rank.max()) + 1
        for r in range(steps):
            idx = order[rank == r]
            cls = t[idx]  # distinct clusters
            m = mu * mem[cls] + (1.0 - mu) * x[idx]
            mem[cls] = m / m.norm(dim=1, keepdim=True)
