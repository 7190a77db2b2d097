"""P x K identity samplers: composition, modality split, determinism, DDP slicing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cmamlib.data.samplers import CrossModalitySampler, RandomIdentitySampler


def _labels(seed: int = 0, n_ids: int = 12, noise: int = 15) -> np.ndarray:
    """Identities with 1..20 images (some fewer than K), plus -1 noise, shuffled."""
    rng = np.random.default_rng(seed)
    lab = np.concatenate([np.full(rng.integers(1, 21), i) for i in range(n_ids)] + [np.full(noise, -1)])
    return rng.permutation(lab)


def _cross(seed: int = 0):
    """Labels + modality: ids 0..7 in both modalities, 8..9 visible only, 10..11 infrared only."""
    rng = np.random.default_rng(seed)
    lab, ir = [], []
    for i in range(12):
        nv = 0 if i >= 10 else int(rng.integers(1, 15))
        ni = 0 if 8 <= i < 10 else int(rng.integers(1, 15))
        lab += [i] * (nv + ni)
        ir += [False] * nv + [True] * ni
    lab += [-1] * 10
    ir += list(rng.random(10) < 0.5)
    perm = rng.permutation(len(lab))
    return np.array(lab)[perm], np.array(ir)[perm]


def _check_pk(batch, labels, p, k):
    assert len(batch) == p * k
    blocks = [batch[i * k : (i + 1) * k] for i in range(p)]
    pids = [labels[b[0]] for b in blocks]
    assert len(set(pids)) == p  # P distinct identities
    for b, pid in zip(blocks, pids):
        assert all(labels[j] == pid for j in b)  # K consecutive indices of one identity
        assert pid >= 0


def test_random_identity_batch_composition():
    lab = _labels()
    s = RandomIdentitySampler(lab, num_instances=4, batch_size=16, seed=3)
    batches = list(s.batches())
    assert len(batches) == s.num_batches > 0
    for b in batches:
        _check_pk(b, lab, p=4, k=4)
        counts = Counter(b)
        for j, c in counts.items():  # repeats only for identities with < K images
            if c > 1:
                assert (lab == lab[j]).sum() < 4
    flat = list(s)
    assert flat == [j for b in batches for j in b] and len(s) == len(flat)
    assert not any(lab[j] < 0 for j in flat)


def test_random_identity_pass_covers_like_torchreid():
    # every identity with >= K images contributes floor(n / K) chunks in one pass,
    # so exactly sum(floor(n/K)) + (#ids with < K) chunks exist; at most P-1 chunks can
    # be left over at the end (fewer than P identities with chunks left).
    lab = _labels(seed=1)
    k, p = 4, 3
    s = RandomIdentitySampler(lab, num_instances=k, batch_size=p * k, seed=0)
    n = Counter(lab[lab >= 0].tolist())
    total_chunks = sum(max(1, c // k) for c in n.values())
    used = s.num_batches * p
    assert used <= total_chunks
    # any leftover chunks belong to fewer than P identities, so used >= total - max_left
    max_per_id = max(max(1, c // k) for c in n.values())
    assert used >= total_chunks - (p - 1) * max_per_id
    per_id = Counter(lab[j] for b in s.batches() for j in b)
    for pid, c in per_id.items():
        assert c % k == 0 and c // k <= max(1, n[pid] // k)
    # no image used twice for identities with >= K images
    seen = Counter(j for b in s.batches() for j in b)
    assert all(c == 1 for j, c in seen.items() if n[lab[j]] >= k)


def test_random_identity_determinism_and_set_epoch():
    lab = _labels()
    a = RandomIdentitySampler(lab, num_instances=4, batch_size=16, seed=5)
    b = RandomIdentitySampler(lab.tolist(), num_instances=4, batch_size=16, seed=5)
    assert list(a) == list(b) == list(a)  # same seed -> same order; re-iteration stable
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == e0
    c = RandomIdentitySampler(lab, num_instances=4, batch_size=16, seed=6)
    assert list(c) != e0


def test_noise_only_ids_excluded_and_errors():
    lab = np.array([-1, -1, 0, 0, 1, 1, 2, 2, -1])
    s = RandomIdentitySampler(torch.tensor(lab), num_instances=2, batch_size=4, seed=0)
    assert all(lab[j] >= 0 for j in s)
    with pytest.raises(ValueError, match="only 3 identities"):
        RandomIdentitySampler(lab, num_instances=2, batch_size=8)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(lab, num_instances=3, batch_size=4)
    with pytest.raises(ValueError, match="world_size"):
        RandomIdentitySampler(lab, num_instances=2, batch_size=6, rank=0, world_size=2)
    with pytest.raises(ValueError, match="even"):
        CrossModalitySampler(lab, lab > 0, num_instances=3, batch_size=6)
    with pytest.raises(ValueError, match="same length"):
        CrossModalitySampler(lab, [True], num_instances=2, batch_size=4)


def test_fixed_batches_per_epoch():
    lab = _labels()
    s = RandomIdentitySampler(lab, num_instances=4, batch_size=16, seed=0, batches_per_epoch=50)
    batches = list(s.batches())
    assert len(batches) == 50 == s.num_batches and len(s) == 50 * 16
    for b in batches:
        _check_pk(b, lab, p=4, k=4)
    # identities are visited in reshuffled rounds: counts differ by at most one round
    per_id = Counter(lab[b[i]] for b in batches for i in range(0, 16, 4))
    assert max(per_id.values()) - min(per_id.values()) <= 1 and len(per_id) == 12


def test_cross_modality_split():
    lab, ir = _cross()
    k, p = 8, 4
    s = CrossModalitySampler(lab, ir, num_instances=k, batch_size=p * k, seed=0)
    both = {i for i in range(12) if (ir[lab == i]).any() and (~ir[lab == i]).any()}
    assert both == set(range(8))
    batches = list(s.batches())
    assert batches
    for b in batches:
        _check_pk(b, lab, p, k)
        for i in range(p):
            blk = b[i * k : (i + 1) * k]
            mods = ir[blk]
            if lab[blk[0]] in both:
                assert not mods[: k // 2].any() and mods[k // 2 :].all()  # K/2 visible, then K/2 IR
            else:
                assert (mods == mods[0]).all()  # one modality only: K from it
    used = Counter(j for b in batches for j in b)
    n_chunks = {}
    for i in both:
        nv, ni = (~ir[lab == i]).sum(), (ir[lab == i]).sum()
        n_chunks[i] = max(max(1, nv // (k // 2)), max(1, ni // (k // 2)))
    per_id = Counter(lab[b[i * k]] for b in batches for i in range(p))
    for i, c in per_id.items():
        if i in both:
            assert c <= n_chunks[i]
    assert all(lab[j] >= 0 for j in used)


def test_cross_modality_determinism_and_epoch():
    lab, ir = _cross(1)
    a = CrossModalitySampler(lab, ir, num_instances=4, batch_size=16, seed=2)
    b = CrossModalitySampler(lab, torch.tensor(ir), num_instances=4, batch_size=16, seed=2)
    assert list(a) == list(b)
    e0 = list(a)
    a.set_epoch(3)
    assert list(a) != e0


@pytest.mark.parametrize("fixed", [None, 20])
@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_slices_partition_global_batch(world_size, fixed):
    lab, ir = _cross(2)
    kw = dict(num_instances=4, batch_size=32, seed=11, batches_per_epoch=fixed)
    single = CrossModalitySampler(lab, ir, **kw, rank=0, world_size=1)
    single.set_epoch(2)
    ranks = [CrossModalitySampler(lab, ir, **kw, rank=r, world_size=world_size) for r in range(world_size)]
    for r in ranks:
        r.set_epoch(2)
    per_rank = [list(r.batches()) for r in ranks]
    glob = list(single.batches())
    assert all(len(b) == len(glob) for b in per_rank)
    assert all(r.local_batch_size == 32 // world_size for r in ranks)
    p_local = 8 // world_size
    for t, gb in enumerate(glob):
        slices = [per_rank[r][t] for r in range(world_size)]
        assert sum(slices, []) == gb  # concatenation of the ranks' slices = the global batch
        for sl in slices:  # each slice: P / world_size whole identities x K
            _check_pk(sl, lab, p_local, 4)
        pids = [lab[sl[i * 4]] for sl in slices for i in range(p_local)]
        assert len(set(pids)) == 8  # disjoint identities across ranks
    assert len(ranks[0]) == len(single) // world_size


def test_usable_with_dataloader():
    lab = _labels()
    s = RandomIdentitySampler(lab, num_instances=4, batch_size=16, seed=0)
    ds = TensorDataset(torch.arange(len(lab)))
    got = [b[0].tolist() for b in DataLoader(ds, sampler=s, batch_size=s.local_batch_size, drop_last=True)]
    assert got == list(s.batches())
    got2 = [b[0].tolist() for b in DataLoader(ds, batch_sampler=list(s.batches()))]
    assert got2 == got


def test_single_image_identities_with_replacement():
    lab = np.arange(6)  # every identity has one image
    s = RandomIdentitySampler(lab, num_instances=4, batch_size=8, seed=0)
    batches = list(s.batches())
    assert len(batches) == 3  # 6 identities, one chunk each, P = 2
    for b in batches:
        _check_pk(b, lab, 2, 4)


def test_cross_modality_pass_uses_larger_modality_once():
    # P = 1: a pass uses every chunk. Identity 0: 10 visible, 3 infrared, K = 4 (2 + 2):
    # 5 visible chunks -> 5 batches, each visible image once, infrared cycled.
    lab = np.array([0] * 13 + [1] * 4 + [2] * 6)
    ir = np.array([False] * 10 + [True] * 3 + [False] * 2 + [True] * 2 + [True] * 6)
    s = CrossModalitySampler(lab, ir, num_instances=4, batch_size=4, seed=0)
    batches = list(s.batches())
    b0 = [b for b in batches if lab[b[0]] == 0]
    assert len(b0) == 5
    vis = sorted(j for b in b0 for j in b[:2])
    assert vis == list(range(10))
    assert all(set(b[2:]) <= {10, 11, 12} and len(set(b[2:])) == 2 for b in b0)
    assert len([b for b in batches if lab[b[0]] == 1]) == 1  # 2 + 2 images: one chunk
    b2 = [b for b in batches if lab[b[0]] == 2]  # infrared only: K = 4 infrared, 1 chunk
    assert len(b2) == 1 and ir[b2[0]].all() and len(set(b2[0])) == 4
