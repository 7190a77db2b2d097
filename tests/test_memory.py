"""ClusterMemory vs plain-loop oracles written from cluster-contrast's ``cm.py``.

``oracle_update_mean`` is the loop of ``CM.backward``, ``oracle_update_hard`` the loop
of ``CM_Hard.backward``; ``oracle_logits`` one dot product at a time. They are also
what ``benchmarks/bench_matching.py`` times.
"""

from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn.functional as F

from cmamlib.memory import ClusterMemory

# ---------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------


def oracle_reset(features, labels):
    groups = collections.defaultdict(list)
    for f, y in zip(features, labels.tolist()):
        if y >= 0:
            groups[y].append(f)
    rows = []
    for c in range(max(groups) + 1):
        m = sum(groups[c]) / len(groups[c])
        rows.append(m / m.norm())
    return torch.stack(rows)


def oracle_logits(inputs, memory, temperature):
    x = F.normalize(inputs.float(), dim=1)
    out = torch.zeros(x.shape[0], memory.shape[0])
    for b in range(x.shape[0]):
        for c in range(memory.shape[0]):
            out[b, c] = torch.dot(x[b], memory[c]) / temperature
    return out


def oracle_loss(logits, targets):
    total = 0.0
    for b in range(logits.shape[0]):
        z = [float(v) for v in logits[b]]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        total += lse - z[int(targets[b])]
    return total / logits.shape[0]


def oracle_update_mean(memory, inputs, targets, momentum):
    """cluster-contrast ``CM.backward``: sequential per sample, in batch order."""
    features = memory.clone()
    for x, y in zip(F.normalize(inputs.float(), dim=1), targets):
        features[y] = momentum * features[y] + (1.0 - momentum) * x
        features[y] /= features[y].norm()
    return features


def oracle_update_hard(memory, inputs, targets, momentum):
    """cluster-contrast ``CM_Hard.backward``: the least similar sample per cluster."""
    features = memory.clone()
    batch_centers = collections.defaultdict(list)
    for x, y in zip(F.normalize(inputs.float(), dim=1), targets.tolist()):
        batch_centers[y].append(x)
    for index, feats in batch_centers.items():
        distances = [float(f.unsqueeze(0).mm(features[index].unsqueeze(0).t())[0][0]) for f in feats]
        hard = min(range(len(distances)), key=lambda k: distances[k])  # first minimum
        features[index] = features[index] * momentum + (1 - momentum) * feats[hard]
        features[index] /= features[index].norm()
    return features


def _setup(seed=0, n=60, c=7, d=16, b=20):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.cat([torch.arange(c), torch.randint(-1, c, (n - c,), generator=g)])
    inputs = torch.randn(b, d, generator=g) * 3
    targets = torch.randint(0, c, (b,), generator=g)
    return feats, labels, inputs, targets


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------


def test_reset_vs_oracle():
    feats, labels, _, _ = _setup()
    mem = ClusterMemory(16)
    mem.reset(feats, labels)
    assert mem.num_clusters == 7 and mem.features.dtype == torch.float32
    torch.testing.assert_close(mem.features, oracle_reset(feats, labels), atol=1e-6, rtol=0)
    assert "features" in mem.state_dict()


def test_logits_and_loss_vs_oracle():
    feats, labels, inputs, targets = _setup(1)
    mem = ClusterMemory(16, temperature=0.05)
    mem.reset(feats, labels)
    z = mem.logits(inputs)
    torch.testing.assert_close(z, oracle_logits(inputs, mem.features, 0.05), atol=1e-4, rtol=1e-6)
    loss, z2 = mem(inputs, targets, update=False, return_logits=True)
    assert loss.item() == pytest.approx(oracle_loss(z, targets), abs=1e-5)
    torch.testing.assert_close(z2, z)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_mean_is_sequential_cm(seed):
    feats, labels, inputs, targets = _setup(seed, b=33)
    mem = ClusterMemory(16, momentum=0.2)
    mem.reset(feats, labels)
    want = oracle_update_mean(mem.features, inputs, targets, 0.2)
    mem.update(inputs, targets)
    torch.testing.assert_close(mem.features, want, atol=1e-6, rtol=0)
    # untouched clusters unchanged, rows unit norm
    torch.testing.assert_close(mem.features.norm(dim=1), torch.ones(7), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_hard_vs_cm_hard(seed):
    feats, labels, inputs, targets = _setup(seed, b=33)
    mem = ClusterMemory(16, momentum=0.2, mode="hard")
    mem.reset(feats, labels)
    want = oracle_update_hard(mem.features, inputs, targets, 0.2)
    mem.update(inputs, targets)
    torch.testing.assert_close(mem.features, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["mean", "hard"])
def test_forward_loss_before_update_then_updates(mode):
    feats, labels, inputs, targets = _setup(3)
    mem = ClusterMemory(16, mode=mode).train()
    mem.reset(feats, labels)
    before = mem.features.clone()
    want_loss = oracle_loss(oracle_logits(inputs, before, 0.05), targets)
    oracle = oracle_update_mean if mode == "mean" else oracle_update_hard
    want_mem = oracle(before, inputs, targets, 0.2)
    x = inputs.clone().requires_grad_(True)
    loss = mem(x, targets)
    assert loss.item() == pytest.approx(want_loss, abs=1e-5)
    torch.testing.assert_close(mem.features, want_mem, atol=1e-6, rtol=0)
    # the gradient uses the pre-update memory (cluster-contrast: update after grad_inputs)
    loss.backward()
    x2 = inputs.clone().requires_grad_(True)
    F.cross_entropy(F.normalize(x2, dim=1) @ before.t() / 0.05, targets).backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-6, rtol=1e-5)
    assert not mem.features.requires_grad and mem.features.grad is None
    # eval mode: no update by default
    mem.eval()
    snap = mem.features.clone()
    mem(inputs, targets)
    torch.testing.assert_close(mem.features, snap, atol=0, rtol=0)


def test_gradient_flows_to_inputs_not_memory():
    feats, labels, inputs, targets = _setup(4)
    mem = ClusterMemory(16)
    mem.reset(feats, labels)
    x = inputs.clone().requires_grad_(True)
    z = mem.logits(x)
    mem.update(inputs, targets)  # in-place update between forward and backward is fine
    z.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert list(mem.parameters()) == []


def test_half_inputs_and_autocast():
    feats, labels, inputs, targets = _setup(5)
    mem = ClusterMemory(16)
    mem.reset(feats, labels)
    ref = mem(inputs, targets, update=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = mem.logits(inputs)
        loss = mem(inputs.half(), targets, update=False)
    assert z.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(z, mem.logits(inputs))
    assert loss.item() == pytest.approx(ref.item(), abs=5e-2)


def test_device_follows_to():
    mem = ClusterMemory(8, num_clusters=3)
    assert mem.features.shape == (3, 8)
    if torch.cuda.is_available():
        mem = mem.cuda()
        mem.reset(torch.randn(10, 8), torch.arange(10) % 3)
        assert mem.features.is_cuda
        loss = mem(torch.randn(4, 8, device="cuda"), torch.tensor([0, 1, 2, 0], device="cuda"))
        assert loss.is_cuda


def test_errors_name_the_problem():
    mem = ClusterMemory(4)
    with pytest.raises(ValueError, match=r"ids \[1\] missing"):
        mem.reset(torch.randn(3, 4), torch.tensor([0, 2, -1]))
    with pytest.raises(ValueError, match="below -1"):
        mem.reset(torch.randn(3, 4), torch.tensor([0, -3, 1]))
    with pytest.raises(ValueError, match="all noise"):
        mem.reset(torch.randn(2, 4), torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match=r"labels must be \(3,\)"):
        mem.reset(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        mem.reset(torch.randn(3, 5), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="integer"):
        mem.reset(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    mem.reset(torch.randn(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"targets \[2\] out of range.*0\.\.1"):
        mem(torch.randn(2, 4), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"targets \[-1\] out of range"):
        mem.update(torch.randn(2, 4), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"inputs must be \(B, 4\)"):
        mem.logits(torch.randn(2, 3))
    with pytest.raises(ValueError, match="mode 'soft'"):
        ClusterMemory(4, mode="soft")
    with pytest.raises(ValueError, match="temperature"):
        ClusterMemory(4, temperature=0)
