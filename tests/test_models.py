"""Backbone layout (torchvision keys), shapes, pooling, BNNeck, pretrained loading, features."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cmamlib.features import extract_features
from cmamlib.models import GeM, NonLocal, ReIDNet, ReIDOutput, ResNet, build_model, load_pretrained


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one thread is fastest, and it avoids OpenMP spin-wait collapse when
    # other processes share the 2 CPU cores. Restored for the other test modules.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------
# Oracle: torchvision's ResNet state dict, written out from the architecture (He et al.
# 2016, torchvision v1.5), independently of cmamlib.models.
# --------------------------------------------------------------------------------------
def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def torchvision_layout(arch: str, num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[arch]
    bottleneck = arch == "resnet50"
    exp = 4 if bottleneck else 1
    keys = [("conv1.weight", (64, 3, 7, 7))] + _bn("bn1", 64)
    inplanes = 64
    for s, (n, planes) in enumerate(zip(blocks, [64, 128, 256, 512]), start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            cin = inplanes if b == 0 else planes * exp
            if bottleneck:
                keys += [(f"{p}.conv1.weight", (planes, cin, 1, 1))] + _bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                keys += [(f"{p}.conv3.weight", (planes * 4, planes, 1, 1))] + _bn(f"{p}.bn3", planes * 4)
            else:
                keys += [(f"{p}.conv1.weight", (planes, cin, 3, 3))] + _bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            # torchvision adds a projection when the stride or the channel count changes
            if b == 0 and (s > 1 or inplanes != planes * exp):
                keys += [(f"{p}.downsample.0.weight", (planes * exp, cin, 1, 1))]
                keys += _bn(f"{p}.downsample.1", planes * exp)
        inplanes = planes * exp
    keys += [("fc.weight", (num_classes, 512 * exp)), ("fc.bias", (num_classes,))]
    return keys


# conv1+bn1 = 6; basic block 12 entries, bottleneck 18, a downsample +6; fc 2.
# resnet18: 6 + 8*12 + 3*6 + 2 = 122; resnet34: 6 + 16*12 + 3*6 + 2 = 218;
# resnet50: 6 + 16*18 + 4*6 + 2 = 320 (layer1.0 has a downsample: 64 -> 256 channels).
EXPECTED_COUNTS = {"resnet18": 122, "resnet34": 218, "resnet50": 320}


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_state_dict_matches_torchvision_layout(arch):
    layout = torchvision_layout(arch)
    assert len(layout) == EXPECTED_COUNTS[arch]
    with torch.device("meta"):  # no memory, no init cost
        net = ResNet(arch, width=64, last_stride=2, num_classes=1000)
    sd = net.state_dict()
    assert [k for k, _ in layout] == list(sd)  # same names, same order
    for k, shape in layout:
        assert tuple(sd[k].shape) == shape, k


def test_spot_keys_resnet50():
    with torch.device("meta"):
        sd = ResNet("resnet50", width=64, num_classes=1000).state_dict()
    assert tuple(sd["layer4.2.bn3.running_var"].shape) == (2048,)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd["layer4.0.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (1000, 2048)
    assert "layer1.0.downsample.0.weight" not in ResNet("resnet18", width=8).state_dict()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_reidnet_keys_are_prefixed_torchvision_keys(arch):
    with torch.device("meta"):
        model = build_model(arch, width=64)
    tv = [k for k, _ in torchvision_layout(arch) if not k.startswith("fc.")]
    sd = model.state_dict()
    assert [k for k in sd if k.startswith("backbone.")] == ["backbone." + k for k in tv]
    rest = sorted(k for k in sd if not k.startswith("backbone."))
    neck = [f"neck.{s}" for s in ("bias", "num_batches_tracked", "running_mean", "running_var", "weight")]
    assert rest == sorted(["pool.p"] + neck)


def test_width_stage_channels():
    with torch.device("meta"):
        sd = ResNet("resnet50", width=16).state_dict()
    assert tuple(sd["conv1.weight"].shape) == (16, 3, 7, 7)
    assert tuple(sd["layer4.2.conv3.weight"].shape) == (512, 128, 1, 1)
    assert "fc.weight" not in sd


@pytest.mark.parametrize(
    "arch,width,dim", [("resnet18", 32, 256), ("resnet34", 16, 128), ("resnet50", 16, 512), ("resnet18", 64, 512)]
)
def test_feat_dim(arch, width, dim):
    with torch.device("meta"):
        model = build_model(arch, width=width)
    expect = (2048 if arch == "resnet50" else 512) * width // 64
    assert model.feat_dim == dim == expect


@pytest.mark.parametrize(
    "arch,width,hw,last_stride,fmap",
    [
        ("resnet18", 32, (128, 64), 1, (8, 4)),
        ("resnet18", 32, (128, 64), 2, (4, 2)),
        ("resnet18", 16, (64, 32), 1, (4, 2)),
        ("resnet18", 16, (64, 32), 2, (2, 1)),
        ("resnet50", 8, (64, 32), 1, (4, 2)),
        ("resnet50", 8, (64, 32), 2, (2, 1)),
    ],
)
def test_output_shapes(arch, width, hw, last_stride, fmap):
    torch.manual_seed(0)
    model = build_model(arch, width=width, last_stride=last_stride)
    x = torch.randn(2, 3, *hw)
    out = model(x)
    assert isinstance(out, ReIDOutput)
    assert out.feat.shape == out.bn_feat.shape == (2, model.feat_dim)
    model.eval()
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, model.feat_dim, *fmap)
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, model.feat_dim)


def test_classifier_forward_like_torchvision():
    torch.manual_seed(0)
    net = ResNet("resnet18", width=8, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        manual = net.fc(net.forward_features(x).mean(dim=(2, 3)))
        assert torch.allclose(net(x), manual, atol=1e-6)


def test_gem_p1_is_average_pooling_and_matches_loop():
    x = torch.rand(3, 5, 4, 2) * 2
    assert torch.allclose(GeM(p=1.0, learnable=False)(x), F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-6)
    gem = GeM(p=3.0)
    y = gem(x)
    yd = y.detach()
    for b in range(3):
        for c in range(5):
            vals = [max(float(v), 1e-6) ** 3 for v in x[b, c].flatten()]
            assert abs(float(yd[b, c]) - (sum(vals) / len(vals)) ** (1 / 3)) < 1e-5
    assert isinstance(gem.p, torch.nn.Parameter) and gem.p.item() == 3.0
    y.sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all()
    assert "p" not in dict(GeM(3.0, learnable=False).named_parameters())


def test_gem_large_p_tends_to_max():
    x = torch.rand(2, 4, 3, 3) + 0.1
    assert torch.allclose(GeM(p=200.0, learnable=False)(x), x.amax(dim=(2, 3)), rtol=2e-2)


def test_bnneck_train_and_eval_outputs():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8)
    assert not model.neck.bias.requires_grad and model.neck.weight.requires_grad
    x = torch.randn(4, 3, 64, 32)
    out = model(x)
    # train mode: post-BN = batch-normalised pre-BN (weight 1, bias 0)
    ref = (out.feat - out.feat.mean(0)) / torch.sqrt(out.feat.var(0, unbiased=False) + model.neck.eps)
    assert torch.allclose(out.bn_feat, ref, atol=1e-4)
    model.eval()
    with torch.no_grad():
        pooled = model.pool(model.forward_features(x))
        assert torch.allclose(model(x), model.neck(pooled))
    plain = build_model("resnet18", width=8, neck="none", pooling="avg").train()
    o = plain(x)
    assert torch.equal(o.feat, o.bn_feat)


def test_bias_frozen_gets_no_update():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(torch.randn(4, 3, 64, 32))
    (out.feat.pow(2).mean() + out.bn_feat.sum(1).pow(2).mean()).backward()
    opt.step()
    assert model.neck.bias.abs().max() == 0


def test_same_seed_same_init_and_kaiming():
    torch.manual_seed(123)
    a = build_model("resnet18", width=16)
    torch.manual_seed(123)
    b = build_model("resnet18", width=16)
    torch.manual_seed(124)
    c = build_model("resnet18", width=16)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.backbone.conv1.weight, c.backbone.conv1.weight)
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * k * k))
    w = a.backbone.layer3[0].conv2.weight  # (64, 64, 3, 3)
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.03 * (2 / (64 * 9)) ** 0.5
    assert torch.equal(a.backbone.layer1[0].bn1.weight, torch.ones(16))


def test_zero_init_residual():
    m18 = build_model("resnet18", width=8, zero_init_residual=True).backbone
    m50 = build_model("resnet50", width=8, zero_init_residual=True).backbone
    assert all(blk.bn2.weight.abs().sum() == 0 for layer in (m18.layer1, m18.layer4) for blk in layer)
    assert all(blk.bn3.weight.abs().sum() == 0 for blk in m50.layer3)
    assert m50.layer3[0].bn2.weight.abs().sum() > 0


def test_non_local_agw_layout_and_identity_at_init():
    with torch.device("meta"):
        sd = build_model("resnet50", width=64, non_local=True).state_dict()
    nl = sorted({k.split(".")[1] + "." + k.split(".")[2] for k in sd if ".NL_" in k})
    assert nl == ["NL_2.0", "NL_2.1", "NL_3.0", "NL_3.1", "NL_3.2"]
    assert tuple(sd["backbone.NL_2.0.g.weight"].shape) == (1, 512, 1, 1)  # authors' inter_channels = 1
    assert tuple(sd["backbone.NL_3.2.W.0.weight"].shape) == (1024, 1, 1, 1)
    with pytest.raises(ValueError, match="non_local"):
        build_model("resnet18", non_local=True)  # layer3 has 2 blocks < 3

    torch.manual_seed(0)
    with_nl = build_model("resnet50", width=8, non_local=True).eval()
    torch.manual_seed(0)
    without = build_model("resnet50", width=8).eval()
    without.load_state_dict({k: v for k, v in with_nl.state_dict().items() if ".NL_" not in k})
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(with_nl(x), without(x), atol=1e-5)  # zero-init W: identity


def test_non_local_matches_loop():
    torch.manual_seed(0)
    blk = NonLocal(6, inter_channels=None).eval()
    torch.nn.init.normal_(blk.W[1].weight)
    x = torch.randn(2, 6, 3, 2)
    with torch.no_grad():
        out = blk(x)
        th, ph, g = blk.theta(x), blk.phi(x), blk.g(x)
        y = torch.zeros_like(g)
        n = 6
        for b in range(2):
            pos = [(i, j) for i in range(3) for j in range(2)]
            for p, (i, j) in enumerate(pos):
                acc = torch.zeros(g.shape[1])
                for i2, j2 in pos:
                    acc += (th[b, :, i, j] @ ph[b, :, i2, j2]) / n * g[b, :, i2, j2]
                y[b, :, i, j] = acc
        assert blk.inter_channels == 3
        assert torch.allclose(out, x + blk.W(y), atol=1e-5)


def test_channels_last_and_autocast():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8, non_local=(0, 1, 1, 0)).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)
        assert torch.allclose(cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    assert F.cosine_similarity(y.float(), ref).min() > 0.95
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 64, 32))
    out.bn_feat.float().sum().backward()
    assert model.backbone.conv1.weight.grad is not None


# --------------------------------------------------------------------------------------
# load_pretrained
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv_state():
    """A torchvision-layout resnet18 state dict (width 64) with an ImageNet-style fc."""
    torch.manual_seed(7)
    src = build_model("resnet18", width=64)
    for m in src.modules():  # make running stats distinguishable from a fresh init
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(5)
    sd = {k[len("backbone.") :]: v.clone() for k, v in src.state_dict().items() if k.startswith("backbone.")}
    sd["fc.weight"] = torch.randn(1000, 512)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _assert_backbone_equal(model: ReIDNet, sd: dict):
    own = model.backbone.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_pretrained_roundtrip(tmp_path, tv_state, fmt):
    path = tmp_path / f"r18.{fmt}"
    if fmt == "pth":
        torch.save(tv_state, path)
    else:
        save_file({k: v.contiguous() for k, v in tv_state.items()}, str(path))
    torch.manual_seed(0)
    model = build_model("resnet18", width=64)
    neck_before = {k: v.clone() for k, v in model.neck.state_dict().items()}
    res = load_pretrained(model, path)
    _assert_backbone_equal(model, tv_state)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert sorted(res.ignored_keys) == ["fc.bias", "fc.weight"]
    assert len(res.loaded_keys) == 122 - 2
    for k, v in model.neck.state_dict().items():
        assert torch.equal(v, neck_before[k])
    # through the factory, and into a bare ResNet
    torch.manual_seed(1)
    _assert_backbone_equal(build_model("resnet18", width=64, pretrained=path), tv_state)
    bare = ResNet("resnet18", width=64)
    assert load_pretrained(bare, path).missing_keys == []
    assert torch.equal(bare.layer2[0].downsample[0].weight, tv_state["layer2.0.downsample.0.weight"])


def test_load_pretrained_reports_missing_and_unexpected(tmp_path, tv_state, caplog):
    sd = dict(tv_state)
    del sd["layer1.0.conv1.weight"]
    for k in [k for k in sd if k.endswith("num_batches_tracked")]:
        del sd[k]  # as in torchvision's ImageNet files: not reported
    sd["extra.weight"] = torch.zeros(3)
    sd = {"module." + k: v for k, v in sd.items()}  # DDP prefix is stripped
    path = tmp_path / "w.pth"
    torch.save({"state_dict": sd}, path)
    model = build_model("resnet18", width=64)
    with caplog.at_level(logging.WARNING, logger="cmamlib.models"):
        res = load_pretrained(model, path)
    assert res.missing_keys == ["backbone.layer1.0.conv1.weight"]
    assert res.unexpected_keys == ["extra.weight"]
    assert "extra.weight" in caplog.text and "backbone.layer1.0.conv1.weight" in caplog.text
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, tv_state["layer4.1.bn2.running_var"])


def test_load_pretrained_shape_mismatch_names_key_and_shapes(tmp_path, tv_state):
    sd = dict(tv_state)
    sd["layer3.1.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    torch.manual_seed(0)
    model = build_model("resnet18", width=64)
    before = model.backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"layer3\.1\.conv2\.weight.*\(256, 256, 1, 1\).*\(256, 256, 3, 3\)"):
        load_pretrained(model, path)
    assert torch.equal(model.backbone.conv1.weight, before)  # nothing copied


def test_load_pretrained_refuses_width_and_bad_files(tmp_path, tv_state):
    path = tmp_path / "w.pth"
    torch.save(tv_state, path)
    with pytest.raises(ValueError, match="width 32.*width 64"):
        load_pretrained(build_model("resnet18", width=32), path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(build_model("resnet18", width=64), tmp_path / "nope.pth")
    other = tmp_path / "other.pth"
    torch.save({"backbone.conv1.weight": tv_state["conv1.weight"]}, other)
    with pytest.raises(ValueError, match="no entry matches"):
        load_pretrained(build_model("resnet18", width=64), other)


# --------------------------------------------------------------------------------------
# extract_features
# --------------------------------------------------------------------------------------
def test_extract_features_flip_average_then_normalise():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8)
    batches = [torch.randn(3, 3, 32, 16), torch.randn(2, 3, 32, 16)]
    feats = extract_features(model, batches, flip=True, progress=False)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        manual = []
        for x in batches:
            f = (model(x) + model(x.flip(3))) / 2
            manual.append(f / f.norm(dim=1, keepdim=True))
    assert feats.dtype == torch.float32 and feats.shape == (5, model.feat_dim)
    assert torch.allclose(feats, torch.cat(manual), atol=1e-5)
    raw = extract_features(model, [(x, 0) for x in batches], flip=False, normalize=False, progress=False)
    with torch.no_grad():
        assert torch.allclose(raw, torch.cat([model(x) for x in batches]), atol=1e-5)
    amp = extract_features(model, iter(batches), amp=True, progress=False)
    assert F.cosine_similarity(amp, feats).min() > 0.95


# --------------------------------------------------------------------------------------
# paper scale: ResNet-50 + non-local, torchvision-layout ImageNet file written here
# --------------------------------------------------------------------------------------
def test_load_pretrained_resnet50_torchvision_file_into_paper_model(tmp_path, caplog):
    # A file in torchvision's ResNet-50 layout, written from the independent oracle
    # above (names, order and shapes), with random values and no num_batches_tracked
    # (as torchvision's published ImageNet files).
    g = torch.Generator().manual_seed(3)
    sd = {k: torch.randn(shape, generator=g) for k, shape in torchvision_layout("resnet50") if shape != ()}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(sd, path)
    torch.manual_seed(0)
    model = build_model("resnet50", width=64, last_stride=1, non_local=True)
    with caplog.at_level(logging.WARNING, logger="cmamlib.models"):
        res = load_pretrained(model, path)
    own = model.backbone.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert sorted(res.ignored_keys) == ["fc.bias", "fc.weight"] and res.unexpected_keys == []
    assert len(res.loaded_keys) == len(sd) - 2
    # the non-local blocks are not in an ImageNet file: reported by name, left as built
    assert res.missing_keys and all(".NL_" in k for k in res.missing_keys)
    assert "backbone.NL_2.0.W.1.weight" in res.missing_keys and "backbone.NL_3.2.g.weight" in res.missing_keys
    assert "backbone.NL_2.0.W.1.weight" in caplog.text
    assert torch.equal(model.backbone.NL_3[0].W[1].weight, torch.zeros(1024))  # still the identity
    assert model.backbone.layer4[0].conv2.stride == (1, 1) and model.feat_dim == 2048
    # paper input size, last stride 1: a 24 x 8 map at 384 x 128
    model.eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 384, 128)).shape == (1, 2048, 24, 8)

    # a ResNet-101-like or resized file: refused naming the key and both shapes
    bad = dict(sd)
    bad["layer2.0.conv1.weight"] = torch.zeros(64, 256, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"'layer2\.0\.conv1\.weight'.*\(64, 256, 1, 1\).*\(128, 256, 1, 1\)"):
        load_pretrained(build_model("resnet50", width=64), tmp_path / "bad.pth")
    # a ResNet-18 file into a ResNet-50: refused the same way, nothing copied
    r18 = {k: torch.zeros(shape) for k, shape in torchvision_layout("resnet18") if shape != ()}
    save_file(r18, str(tmp_path / "r18.safetensors"))
    fresh = build_model("resnet50", width=64)
    before = fresh.backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(fresh, tmp_path / "r18.safetensors")
    assert torch.equal(fresh.backbone.conv1.weight, before)
