"""P x K identity samplers: every batch holds P distinct (pseudo) identities x K images.

- :class:`RandomIdentitySampler`: torchreid's ``RandomIdentitySampler`` semantics.
- :class:`CrossModalitySampler`: K/2 visible + K/2 infrared images per identity when the
  identity has both modalities (the stage-2 batches of ``docs/method.md``).
- :class:`OtherCameraSampler`: the stage-2 batches of the authors' code (fast-reid's
  ``BalancedIdentitySampler``): per identity an anchor image, then K-1 images of the
  identity from cameras other than the anchor's where it has any; one chunk per identity
  and pass.

One pass ("epoch", default): every identity's images are shuffled and cut into chunks
of K (an identity with fewer than K images gives one chunk drawn with replacement; a
remainder shorter than K is dropped, as torchreid); batches are then formed by drawing
P distinct identities uniformly among those with chunks left and taking one chunk of
each, until fewer than P identities have chunks left. With ``batches_per_epoch=n``
the epoch is instead exactly ``n`` batches (iteration-based training, as fast-reid /
cluster-contrast): identities are visited in reshuffled rounds, each taking its next
chunk (chunks are regenerated when an identity runs out).

Labels < 0 (DBSCAN noise, ``-1``) are ignored. The order depends only on
``(seed, epoch)``: call :meth:`set_epoch` before each epoch (as with
``DistributedSampler``), otherwise every epoch repeats the same order.

Distributed use: ``rank`` / ``world_size`` (default: from ``torch.distributed`` when it
is initialised, else 0 / 1). Every rank builds the same global batches from
``(seed, epoch)`` and keeps the slice of P / world_size identities at position
``rank`` of each; the slices of all ranks together are the single-process batch. Use
``DataLoader(dataset, sampler=s, batch_size=s.local_batch_size, drop_last=True)`` or
``DataLoader(dataset, batch_sampler=list(s.batches()))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["CrossModalitySampler", "OtherCameraSampler", "RandomIdentitySampler"]


def _as_int_array(labels: Any, name: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _resolve_dist(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
    return int(rank), int(world_size)


class _Group:
    """Indices of one identity (in one modality) drawn ``size`` at a time."""

    __slots__ = ("indices", "size")

    def __init__(self, indices: np.ndarray, size: int):
        self.indices = indices
        self.size = size

    def chunks(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One pass: shuffled, cut into chunks of ``size``; fewer than ``size`` images ->
        one chunk drawn with replacement."""
        n = len(self.indices)
        if n < self.size:
            return [rng.choice(self.indices, size=self.size, replace=True)]
        perm = rng.permutation(self.indices)
        m = n // self.size
        return list(perm[: m * self.size].reshape(m, self.size))


class _CameraGroup:
    """Indices of one identity drawn as fast-reid's ``BalancedIdentitySampler`` does: one
    chunk per pass, an anchor drawn uniformly, then ``size - 1`` images of the other cameras
    of the identity (without replacement when there are at least ``size`` of them, else
    with replacement, as fast-reid); an identity seen by one camera only: ``size - 1`` of its
    other images by the same rule; a single image: the anchor repeated."""

    __slots__ = ("cams", "indices", "size")

    def __init__(self, indices: np.ndarray, cams: np.ndarray, size: int):
        self.indices = indices
        self.cams = cams
        self.size = size

    def chunks(self, rng: np.random.Generator) -> list[np.ndarray]:
        a = int(rng.integers(len(self.indices)))
        pool = np.flatnonzero(self.cams != self.cams[a])  # positions within the identity
        if not len(pool):
            pool = np.delete(np.arange(len(self.indices)), a)
        if not len(pool):
            rest = np.full(self.size - 1, a)
        else:
            rest = rng.choice(pool, size=self.size - 1, replace=len(pool) < self.size)
        return [self.indices[np.concatenate([[a], rest]).astype(np.int64)]]


class _IdentityBatchSampler(Sampler[int]):
    """Shared engine: identities made of one or more groups; P x K batches."""

    def __init__(
        self,
        groups: dict[int, list[_Group]],
        num_instances: int,
        batch_size: int,
        seed: int,
        batches_per_epoch: int | None,
        rank: int | None,
        world_size: int | None,
    ):
        if num_instances < 1:
            raise ValueError(f"num_instances={num_instances}: expected >= 1")
        if batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size={batch_size}: expected a positive multiple of num_instances={num_instances} (P x K)"
            )
        self.num_instances = int(num_instances)
        self.batch_size = int(batch_size)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        self.rank, self.world_size = _resolve_dist(rank, world_size)
        if self.num_pids_per_batch % self.world_size:
            raise ValueError(
                f"P={self.num_pids_per_batch} identities per batch (batch_size={batch_size} / "
                f"num_instances={num_instances}) is not divisible by world_size={self.world_size}"
            )
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch={batches_per_epoch}: expected >= 1 or None")
        self.pids = np.array(sorted(groups), dtype=np.int64)
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(
                f"only {len(self.pids)} identities with label >= 0, fewer than P={self.num_pids_per_batch} "
                f"per batch (batch_size={batch_size}, num_instances={num_instances})"
            )
        self._groups = [groups[int(p)] for p in self.pids]
        self.seed = int(seed)
        self.epoch = 0
        self.batches_per_epoch = batches_per_epoch
        self._cache: tuple[int, list[np.ndarray]] | None = None

    # -- public ------------------------------------------------------------------------
    @property
    def local_batch_size(self) -> int:
        """Indices per batch on this rank: batch_size / world_size."""
        return self.batch_size // self.world_size

    @property
    def num_batches(self) -> int:
        """Batches in the current epoch (same on every rank)."""
        return len(self._global_batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; the order is a function of ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def global_batches(self) -> list[list[int]]:
        """All ranks' batches of the current epoch, each ``batch_size`` indices."""
        return [b.tolist() for b in self._global_batches()]

    def batches(self) -> Iterator[list[int]]:
        """This rank's batches of the current epoch: lists of ``local_batch_size`` indices,
        grouped by identity (K consecutive indices per identity)."""
        lo = self.rank * self.local_batch_size
        hi = lo + self.local_batch_size
        for b in self._global_batches():
            yield b[lo:hi].tolist()

    def __iter__(self) -> Iterator[int]:
        for b in self.batches():
            yield from b

    def __len__(self) -> int:
        return self.num_batches * self.local_batch_size

    # -- engine ------------------------------------------------------------------------
    def _id_chunks(self, i: int, rng: np.random.Generator) -> list[np.ndarray]:
        """One pass of identity ``i``: a list of K-index chunks (groups concatenated)."""
        per_group = [g.chunks(rng) for g in self._groups[i]]
        n = max(len(c) for c in per_group)
        for c, g in zip(per_group, self._groups[i]):
            while len(c) < n:  # the shorter group cycles through fresh passes
                c.extend(g.chunks(rng))
            del c[n:]
        return [np.concatenate(parts) for parts in zip(*per_group)]

    def _global_batches(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        p = self.num_pids_per_batch
        n_ids = len(self.pids)
        out: list[np.ndarray] = []
        if self.batches_per_epoch is None:
            pools = [self._id_chunks(i, rng) for i in range(n_ids)]
            avail = [i for i in range(n_ids) if pools[i]]
            while len(avail) >= p:
                picked = rng.choice(len(avail), size=p, replace=False)
                ids = [avail[j] for j in picked]
                out.append(np.concatenate([pools[i].pop() for i in ids]))
                avail = [i for i in avail if pools[i]]
        else:
            pools = [[] for _ in range(n_ids)]
            order: list[int] = []
            for _ in range(self.batches_per_epoch):
                ids: list[int] = []
                while len(ids) < p:
                    if not order:
                        order = rng.permutation(n_ids).tolist()
                    # never the same identity twice in one batch
                    j = next((j for j, i in enumerate(order) if i not in ids), None)
                    if j is None:
                        order = []
                        continue
                    ids.append(order.pop(j))
                chunks = []
                for i in ids:
                    if not pools[i]:
                        pools[i] = self._id_chunks(i, rng)
                    chunks.append(pools[i].pop())
                out.append(np.concatenate(chunks))
        self._cache = (self.epoch, out)
        return out


class RandomIdentitySampler(_IdentityBatchSampler):
    """P x K sampler (torchreid ``RandomIdentitySampler`` semantics).

    Each batch: P = ``batch_size // num_instances`` distinct identities, K =
    ``num_instances`` indices each (consecutive in the batch). Identities with fewer
    than K images are sampled with replacement. See the module docstring for the pass
    structure, ``batches_per_epoch``, determinism and distributed slicing.

    Args:
        labels: (N,) integer (pseudo) labels; entries < 0 are never sampled.
        num_instances: K.
        batch_size: global batch size P x K.
        seed: base seed; the order of epoch e is a function of (seed, e).
        batches_per_epoch: fixed epoch length in batches, or None for one pass.
        rank, world_size: distributed slicing (default: torch.distributed or 0 / 1).

    Raises:
        ValueError: fewer than P identities, batch_size not a multiple of K, P not a
            multiple of world_size.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        num_instances: int = 4,
        batch_size: int = 64,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        lab = _as_int_array(labels, "labels")
        self.labels = lab
        groups: dict[int, list[_Group]] = {}
        valid = np.flatnonzero(lab >= 0)
        for pid in np.unique(lab[valid]):
            groups[int(pid)] = [_Group(valid[lab[valid] == pid], num_instances)]
        super().__init__(groups, num_instances, batch_size, seed, batches_per_epoch, rank, world_size)


class CrossModalitySampler(_IdentityBatchSampler):
    """P x K sampler with a visible / infrared split per identity.

    An identity with images in both modalities contributes K/2 visible then K/2
    infrared indices to each batch it is in; an identity present in one modality only
    contributes K from that modality (with pseudo labels from per-modality clustering +
    matching, these are clusters left unmatched). One pass: per identity, the number of
    chunks is that of its larger modality (every image of it is used once, the smaller
    modality is cycled through reshuffled passes); each modality is sampled with
    replacement when it has fewer than K/2 images.

    Args:
        labels: (N,) integer (pseudo) labels; entries < 0 are never sampled.
        is_infrared: (N,) bool, True for infrared images.
        num_instances: K, even.
        batch_size: global batch size P x K.
        seed, batches_per_epoch, rank, world_size: as :class:`RandomIdentitySampler`.

    Raises:
        ValueError: odd K, length mismatch, and the cases of :class:`RandomIdentitySampler`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        is_infrared: Sequence[bool] | np.ndarray | torch.Tensor,
        num_instances: int = 16,
        batch_size: int = 128,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        lab = _as_int_array(labels, "labels")
        if isinstance(is_infrared, torch.Tensor):
            is_infrared = is_infrared.detach().cpu().numpy()
        ir = np.asarray(is_infrared).astype(bool)
        if ir.shape != lab.shape:
            raise ValueError(f"is_infrared has shape {ir.shape}, labels {lab.shape}: expected the same length")
        if num_instances < 2 or num_instances % 2:
            raise ValueError(f"num_instances={num_instances}: expected an even K >= 2 (K/2 per modality)")
        self.labels = lab
        self.is_infrared = ir
        half = num_instances // 2
        groups: dict[int, list[_Group]] = {}
        valid = np.flatnonzero(lab >= 0)
        for pid in np.unique(lab[valid]):
            idx = valid[lab[valid] == pid]
            vis, inf = idx[~ir[idx]], idx[ir[idx]]
            if len(vis) and len(inf):
                groups[int(pid)] = [_Group(vis, half), _Group(inf, half)]
            else:
                groups[int(pid)] = [_Group(idx, num_instances)]
        super().__init__(groups, num_instances, batch_size, seed, batches_per_epoch, rank, world_size)


class OtherCameraSampler(_IdentityBatchSampler):
    """P x K sampler of the authors' stage-2 code (fast-reid ``BalancedIdentitySampler``).

    Each identity of a batch contributes an anchor image drawn at random, then K-1 images
    of the same identity drawn from cameras other than the anchor's (without replacement
    when at least K such images exist, else with replacement, as fast-reid); an identity
    seen by one camera draws from its other images the same way, and a single image is
    repeated. No visible / infrared quota: with modality-specific cameras an identity of
    both modalities mostly gets images of the other modality and of the anchor's other
    cameras. One pass: one chunk per identity (a fresh anchor each visit); batches then as
    the module docstring (P distinct identities per batch).

    Args:
        labels: (N,) integer (pseudo) labels; entries < 0 are never sampled.
        camids: (N,) integer camera ids.
        num_instances: K >= 2.
        batch_size: global batch size P x K.
        seed, batches_per_epoch, rank, world_size: as :class:`RandomIdentitySampler`.

    Raises:
        ValueError: K < 2, length mismatch, and the cases of :class:`RandomIdentitySampler`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        camids: Sequence[int] | np.ndarray | torch.Tensor,
        num_instances: int = 16,
        batch_size: int = 128,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        lab = _as_int_array(labels, "labels")
        cams = _as_int_array(camids, "camids")
        if cams.shape != lab.shape:
            raise ValueError(f"camids has shape {cams.shape}, labels {lab.shape}: expected the same length")
        if num_instances < 2:
            raise ValueError(f"num_instances={num_instances}: expected K >= 2 (an anchor and K-1 others)")
        self.labels = lab
        self.camids = cams
        groups: dict[int, list] = {}
        valid = np.flatnonzero(lab >= 0)
        for pid in np.unique(lab[valid]):
            idx = valid[lab[valid] == pid]
            groups[int(pid)] = [_CameraGroup(idx, cams[idx], num_instances)]
        super().__init__(groups, num_instances, batch_size, seed, batches_per_epoch, rank, world_size)
