"""Multi-GPU and multi-node training with ``torchrun`` and DistributedDataParallel.

cmamlib has no launcher of its own: ``torchrun --nproc_per_node N -m cmamlib train ...``
starts N processes and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT``; :func:`init_from_env` turns them into a process group
(``nccl`` on CUDA, ``gloo`` on CPU). The two training stages
(:func:`cmamlib.training.cmam.run_cmam`, :func:`cmamlib.training.selftrain.run_selftrain`)
use the helpers below and are unchanged when no process group is initialised: every
helper is then the identity (or a no-op), so a single process computes exactly what it
computed before.

What a distributed run does (world size W), and why it reproduces one process with the
same global batch:

* **Batches**: every rank builds the same global P x K batch from ``(seed, epoch)`` and
  augments the whole global batch with the shared, identically seeded generator (cheap
  next to the forward pass), then keeps its contiguous slice of P / W identities x K
  (:func:`shard_batch`). The slices of all ranks are the single-process batch, and the
  augmentation of every image is the one a single process draws.
* **Gradients**: DistributedDataParallel averages the gradients of per-rank losses.
  Per-sample terms (memory contrastive loss, KL) averaged over a rank's slice and then
  over ranks are the global mean. In-batch matrix terms (CMAM's similarity matrices,
  stage 2's distance matrices, batch-hard triplet) are computed on features gathered from
  every rank with :func:`gather_with_grad`, so they see the global batch.
* **BatchNorm**: without ``sync_bn`` each rank normalises with the statistics of its own
  slice (the usual DDP behaviour; results then depend on the per-GPU batch). With
  ``sync_bn=True`` the statistics are those of the global batch
  (:func:`convert_sync_batchnorm`: ``torch.nn.SyncBatchNorm`` on CUDA,
  :class:`NaiveSyncBatchNorm` on CPU, where torch's SyncBatchNorm refuses to run).
  Running statistics are broadcast from rank 0 at the end of every epoch
  (:func:`sync_buffers`), so every rank holds the same weights and buffers.
* **Memories**: every rank updates its cluster memories with the features of the
  global batch (:func:`all_gather_tensor`, in global batch order), so they stay equal.
* **Features and clustering**: each rank extracts a contiguous block of whole inference
  batches (:func:`extraction_shard`; the same batches one process would form) and the
  blocks are gathered on every rank; clustering runs on rank 0 and its result is
  broadcast (:func:`run_on_main`).
* **Outputs**: checkpoints, ``log.jsonl`` and reports are written by rank 0 only.

Single-node CPU tests use the ``gloo`` backend (``tests/test_distributed.py``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
from typing import Any, Callable, Iterable, Mapping, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = [
    "NaiveSyncBatchNorm",
    "all_gather_object",
    "all_gather_tensor",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "check_batch_split",
    "cleanup",
    "convert_sync_batchnorm",
    "extraction_shard",
    "gather_with_grad",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_device",
    "local_rank",
    "rank",
    "run_on_main",
    "shard_batch",
    "state_hash",
    "sync_buffers",
    "world_size",
    "wrap_ddp",
]

T = TypeVar("T")

#: torchrun's environment variables that :func:`init_from_env` needs when WORLD_SIZE > 1.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ----------------------------------------------------------------------------- process group


def env_world_size() -> int:
    """``WORLD_SIZE`` of the environment (1 when unset): > 1 under ``torchrun`` with several processes."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: expected an integer") from None


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun's environment.

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1. Otherwise picks the
    backend (``nccl`` when ``device`` is ``"auto"``/``"cuda..."`` and CUDA is available,
    ``gloo`` else), sets the CUDA device to ``LOCAL_RANK`` and calls
    ``torch.distributed.init_process_group("env://")``.

    Args:
        device: the configured device (``"auto"``, ``"cpu"``, ``"cuda"``...).
        timeout_s: collective timeout (clustering on rank 0 makes the others wait).

    Returns:
        True when the run is distributed (world size > 1).

    Raises:
        RuntimeError: a torchrun variable is missing, or LOCAL_RANK names no GPU.
    """
    ws = env_world_size()
    if ws <= 1:
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    missing = [k for k in ENV_VARS if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={ws} but {', '.join(missing)} unset: start distributed runs with torchrun "
            f"(torchrun --nproc_per_node N -m cmamlib train ...)"
        )
    use_cuda = torch.cuda.is_available() and (device == "auto" or str(device).startswith("cuda"))
    if use_cuda:
        lr = int(os.environ["LOCAL_RANK"])
        if lr >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={lr} but this machine has {torch.cuda.device_count()} GPUs: use "
                f"--nproc_per_node <= {torch.cuda.device_count()}"
            )
        torch.cuda.set_device(lr)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def cleanup() -> None:
    """Destroy the default process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """A process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank within the node (``LOCAL_RANK``; 0 without a process group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0 (always True in a single process): the rank that writes files."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA device in a distributed run, ``device`` otherwise."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- collectives


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` of every rank along dim 0, in rank order (no gradient).

    The ranks' tensors may differ in their first dimension (zero included); the other
    dimensions and the dtype must agree. Single process: ``t`` itself.

    Shapes: ``(n_r, ...)`` on rank r -> ``(sum_r n_r, ...)`` on every rank, on ``t``'s device.
    """
    if not is_distributed():
        return t
    cd = _comm_device()
    x = t.detach()
    is_bool = x.dtype == torch.bool
    x = (x.to(torch.uint8) if is_bool else x).to(cd).contiguous()
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=cd)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    m = max(counts)
    if x.shape[0] < m:
        x = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in counts]
    dist.all_gather(parts, x)
    out = torch.cat([p[:c] for p, c in zip(parts, counts)])
    out = out.to(torch.bool) if is_bool else out
    return out.to(t.device)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of equal-size slices whose backward sums the gradients of every rank's
    copy of the gathered tensor and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(b, ...)`` per rank -> ``(W * b, ...)`` in rank order, differentiable.

    For a loss computed identically on every rank from the gathered tensor, the
    gradient reaching this rank's slice is W times the single-process gradient; DDP's
    averaging over ranks divides it back. Every rank must pass the same ``b``.
    Single process: ``x`` itself.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.contiguous().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """Mean over ranks of every entry (same keys on every rank); identity in one process."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)  # the same order on every rank
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    t /= world_size()
    mean = dict(zip(keys, t.tolist()))
    return {k: float(mean[k]) for k in values}


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled); identity in one process."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result broadcast to every rank (e.g. clustering).

    An exception raised by ``fn`` on rank 0 is raised on every rank (the others get a
    copy, or a RuntimeError with its text when it cannot be pickled), so no rank waits
    forever. Single process: ``fn()``.
    """
    if not is_distributed():
        return fn()
    payload: tuple[bool, Any] | None = None
    error: Exception | None = None
    if is_main():
        try:
            payload = (True, fn())
        except Exception as e:  # sent to the other ranks, raised below
            error = e
            try:
                pickle.dumps(e)
                payload = (False, e)
            except Exception:
                payload = (False, RuntimeError(f"rank 0: {type(e).__name__}: {e}"))
    ok, value = broadcast_object(payload)  # type: ignore[misc]
    if not ok:
        raise error if error is not None else value
    return value


# ----------------------------------------------------------------------------- batches and shards


def check_batch_split(batch_size: int, num_instances: int, what: str = "") -> None:
    """Raise ValueError unless the P = batch_size / num_instances identities of a global
    batch split evenly over the ranks (each rank gets P / W whole identities)."""
    w = world_size()
    if w == 1:
        return
    p = batch_size // max(num_instances, 1)
    if p % w:
        raise ValueError(
            f"{what}batch_size={batch_size} / num_instances={num_instances} gives P={p} identities per "
            f"batch, which do not split over {w} ranks: use a P divisible by the number of processes "
            f"(e.g. batch_size={num_instances * w * max(1, -(-p // w))})"
        )


def shard_batch(x: T, r: int | None = None, w: int | None = None) -> T:
    """This rank's contiguous slice ``[r * n / w, (r + 1) * n / w)`` of a global batch
    (a tensor, array or list of length n, n divisible by w); ``x`` itself in one process."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    if w == 1:
        return x
    n = len(x)  # type: ignore[arg-type]
    if n % w:
        raise ValueError(f"a global batch of {n} does not split over {w} ranks")
    b = n // w
    return x[r * b : (r + 1) * b]  # type: ignore[index]


def extraction_shard(n: int, batch_size: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows ``[start, end)`` of ``n`` images this rank extracts features of: a contiguous
    block of whole inference batches of ``batch_size`` (the batches a single process
    forms, so features equal the single-process ones); the last ranks may get none."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    nb = -(-n // batch_size)
    lo, hi = (r * nb) // w, ((r + 1) * nb) // w
    return min(n, lo * batch_size), min(n, hi * batch_size)


# ----------------------------------------------------------------------------- models


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a distributed run (``device_ids`` set on CUDA),
    ``model`` itself otherwise. Use the wrapper for training forwards only; extract
    features with the bare model (no collective per forward)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        return DDP(model, device_ids=[device.index if device.index is not None else local_rank()])
    return DDP(model)


class NaiveSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batches of all ranks.

    Runs on any device and backend (``gloo`` on CPU included), which
    ``torch.nn.SyncBatchNorm`` does not. Same idea as detectron2's
    ``NaiveSyncBatchNorm``: per-rank sums of ``x`` and ``x^2`` and the element count are
    all-reduced with a differentiable all-reduce, so the gradient also flows through the
    global statistics. Running statistics use the unbiased variance of the global batch,
    as ``nn.BatchNorm``. Without a process group (or in eval mode) it is plain BatchNorm.
    Accepts ``(N, C)`` and ``(N, C, ...)`` inputs; parameter and buffer names are those of
    ``nn.BatchNorm2d`` (checkpoints are interchangeable).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a (N, C) or (N, C, ...) input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        n_local = xf.numel() // c
        vec = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), float(n_local))])
        vec = _AllReduceSum.apply(vec)
        total = vec[-1]
        mean = vec[:c] / total
        var = (vec[c : 2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
        invstd = torch.rsqrt(var + self.eps)
        w = self.weight.float() if self.weight is not None else torch.ones_like(mean)
        b = self.bias.float() if self.bias is not None else torch.zeros_like(mean)
        scale = w * invstd
        shift = b - mean * scale
        shape = [1, c] + [1] * (x.dim() - 2)
        return (xf * scale.view(shape) + shift.view(shape)).to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer of ``model`` by a synchronised one (in place; the
    parameters and buffers are kept, so an optimiser built before stays valid):
    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`NaiveSyncBatchNorm` elsewhere. Returns
    ``model``; a no-op outside a distributed run."""
    if not is_distributed():
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, NaiveSyncBatchNorm):
            new = NaiveSyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            if m.affine:
                new.weight, new.bias = m.weight, m.bias
            new.running_mean, new.running_var, new.num_batches_tracked = (
                m.running_mean,
                m.running_var,
                m.num_batches_tracked,
            )
            new.train(m.training)
            return new
        for name, child in list(m.named_children()):
            setattr(m, name, convert(child))
        return m

    return convert(model)


@torch.no_grad()
def sync_buffers(modules: Iterable[nn.Module | None], src: int = 0) -> None:
    """Broadcast every buffer (BN running statistics) of ``modules`` from rank ``src``,
    so all ranks hold the same state; no-op in one process."""
    if not is_distributed():
        return
    cd = _comm_device()
    for m in modules:
        if m is None:
            continue
        for b in m.buffers():
            t = b.to(cd)
            dist.broadcast(t, src)
            if t is not b:
                b.copy_(t)


def state_hash(modules: Mapping[str, nn.Module | None]) -> str:
    """SHA-1 of the state dicts (parameters and buffers, names and bytes) of ``modules``:
    equal on every rank when the ranks hold identical weights."""
    h = hashlib.sha1()
    for name in sorted(modules):
        m = modules[name]
        if m is None:
            continue
        for k, v in m.state_dict().items():
            h.update(f"{name}.{k}:{tuple(v.shape)}:{v.dtype}".encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()
