"""Batched tensor transforms vs PIL / per-image oracles."""

import numpy as np
import pytest
import torch
from PIL import Image

from cmamlib.data import transforms as T


def _rand_images(b=6, h=16, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_gray_luma_matches_pil_convert_L():
    x = _rand_images(4, 20, 10)
    got = T.gray_luma(x) * 255.0
    for i in range(4):
        pil = Image.fromarray(x[i].permute(1, 2, 0).numpy(), "RGB").convert("L")
        ref = torch.from_numpy(np.asarray(pil).astype(np.float32))
        for c in range(3):
            assert (got[i, c] - ref).abs().max().item() <= 1.0  # within 1/255 on [0, 1]


def test_gray_random_channel_copies_one_channel():
    x = T.to_float(_rand_images(8))
    g = torch.Generator().manual_seed(0)
    y = T.gray_random_channel(x, g)
    for i in range(8):
        assert torch.equal(y[i, 0], y[i, 1]) and torch.equal(y[i, 1], y[i, 2])
        assert any(torch.equal(y[i, 0], x[i, k]) for k in range(3))


def test_fake_ir_blend():
    x = T.to_float(_rand_images(2))
    f = torch.rand_like(x)
    y = T.gray_view(x, "luma", fake_ir=f, fake_ir_weight=0.2)
    assert torch.allclose(y, 0.2 * f + 0.8 * T.gray_luma(x), atol=1e-6)
    with pytest.raises(ValueError, match="gray mode"):
        T.gray_view(x, "nope")


def test_flip_and_crop_match_per_image_oracle():
    x = T.to_float(_rand_images(5, 12, 6))
    g1 = torch.Generator().manual_seed(7)
    y = T.pad_random_crop(x, 3, g1)
    g2 = torch.Generator().manual_seed(7)
    oy = torch.randint(0, 7, (5,), generator=g2)
    ox = torch.randint(0, 7, (5,), generator=g2)
    for i in range(5):
        pad = torch.nn.functional.pad(x[i], (3, 3, 3, 3))
        ref = pad[:, oy[i] : oy[i] + 12, ox[i] : ox[i] + 6]
        assert torch.equal(y[i], ref)
    g = torch.Generator().manual_seed(1)
    f = T.random_flip(x, 0.5, g)
    for i in range(5):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1))


def test_random_erasing_box_and_probability():
    x = torch.ones(200, 3, 32, 16)
    y = T.random_erasing(x, p=0.5, value=0.0, gen=torch.Generator().manual_seed(0))
    erased = (y == 0).flatten(1).any(1)
    assert 70 < int(erased.sum()) < 130
    for i in torch.nonzero(erased).flatten()[:10]:
        m = (y[i, 0] == 0).nonzero()
        r0, r1 = m[:, 0].min(), m[:, 0].max()
        c0, c1 = m[:, 1].min(), m[:, 1].max()
        assert int((y[i, 0, r0 : r1 + 1, c0 : c1 + 1] == 0).all())  # a full rectangle
        area = (r1 - r0 + 1) * (c1 - c0 + 1) / (32 * 16)
        assert 0.005 < float(area) <= 0.6


def test_channel_exchange_is_a_channel_permutation_or_replication():
    x = T.to_float(_rand_images(16))
    y = T.channel_exchange(x, p=1.0, gen=torch.Generator().manual_seed(3))
    for i in range(16):
        for c in range(3):
            assert any(torch.equal(y[i, c], x[i, k]) for k in range(3))


def test_augment_is_seeded():
    x = T.to_float(_rand_images(4, 16, 8))
    cfg = T.AugmentConfig(channel_aug=0.5, jitter=0.2)
    a = T.augment(x, cfg, torch.Generator().manual_seed(5))
    b = T.augment(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a.shape == x.shape


def test_normalize_and_resize():
    x = torch.rand(2, 3, 8, 4)
    n = T.normalize(x)
    assert torch.allclose(n[:, 0], (x[:, 0] - 0.485) / 0.229)
    assert T.resize(x, (16, 8)).shape == (2, 3, 16, 8)
