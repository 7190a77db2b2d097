"""Pure-torch ResNet-18/34/50 backbones and the re-ID network (GeM pooling + BNNeck).

No torchvision or timm: the backbone is written out here with **torchvision-compatible
parameter names** (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ``fc.weight`` ...), so ImageNet weights saved from
torchvision load with :func:`load_pretrained` (nothing is downloaded).

Pieces (each a small module):

- :class:`ResNet`: He et al. 2016 ResNet, torchvision layout (v1.5: the stride of a
  bottleneck sits on its 3x3 conv), with a configurable base ``width`` (64 =
  torchvision; the CPU default of cmamlib is 32), ``last_stride`` (1 keeps the
  layer-4 map twice as large, Luo et al. 2019 "Bag of tricks"), and optional non-local
  blocks (Wang et al. 2018) inserted as in the AGW baseline / fast-reid (Ye et al. 2021).
- :class:`GeM`: generalised-mean pooling (Radenovic et al. 2018),
  ``f_c = (mean_{h,w} max(x_{c,h,w}, eps)^p)^(1/p)``; learnable or fixed ``p``.
- :class:`ReIDNet`: backbone -> pooling -> BNNeck (``BatchNorm1d`` with a frozen bias,
  Luo et al. 2019). Training forward returns the pre-BN feature (triplet / distance
  losses) and the post-BN feature (identity / memory losses); eval forward returns the
  post-BN feature, **not** L2-normalised (the caller normalises).
- :func:`build_model`: the factory; :func:`load_pretrained`: user-supplied ImageNet
  weights (``.pth`` or ``.safetensors``) into the backbone.

Defaults follow the authors' code (fast-reid based, see ``docs/method.md``): last
stride 1, learnable GeM with p=3, BNNeck; a plain ResNet-50 at paper scale (the code's
config builds non-local blocks that its ``nn.Sequential`` wrapper never runs, so the paper
presets keep ``non_local=False``; the blocks stay available).
``non_local_inter_channels=1`` reproduces what fast-reid and AGW actually build (their
``inter_channels = reduc_ratio // reduc_ratio``); ``None`` gives the ``in_channels // 2``
bottleneck of Wang et al.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "ARCHS",
    "BasicBlock",
    "Bottleneck",
    "GeM",
    "LoadResult",
    "NonLocal",
    "ReIDNet",
    "ReIDOutput",
    "ResNet",
    "build_model",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

#: name -> (block type, blocks per stage); the torchvision definitions.
ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}

#: AGW / fast-reid placement: non-local blocks after the last 2 blocks of layer2 and
#: the last 3 blocks of layer3.
AGW_NON_LOCAL = (0, 2, 3, 0)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (ResNet-18/34); names as torchvision."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 (x4 channels) + identity (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class NonLocal(nn.Module):
    """Non-local block, dot-product form, as in AGW / fast-reid (``Non_local``).

    ``z = x + W(y)``, ``y_i = (1/N) sum_j theta(x_i)^T phi(x_j) g(x_j)`` over the
    ``N = H*W`` positions (Wang et al. 2018, Eq. 1 with the dot-product pairwise
    function and normalisation ``C(x) = N``). ``W`` is a 1x1 conv + BatchNorm whose
    affine parameters start at zero, so a fresh block is the identity map.

    Args:
        in_channels: channels C of the input map.
        inter_channels: channels of theta/phi/g. The authors' code (fast-reid, AGW) uses
            1 (``reduc_ratio // reduc_ratio``); ``None`` -> ``in_channels // 2``.

    Shapes: ``x`` (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, in_channels: int, inter_channels: int | None = 1):
        super().__init__()
        self.in_channels = in_channels
        self.inter_channels = max(1, in_channels // 2) if inter_channels is None else int(inter_channels)
        ci = self.inter_channels
        self.g = nn.Conv2d(in_channels, ci, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, ci, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, ci, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(ci, in_channels, kernel_size=1), nn.BatchNorm2d(in_channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        ci = self.inter_channels
        g_x = self.g(x).reshape(b, ci, h * w).transpose(1, 2)  # (B, N, ci)
        theta_x = self.theta(x).reshape(b, ci, h * w).transpose(1, 2)  # (B, N, ci)
        phi_x = self.phi(x).reshape(b, ci, h * w)  # (B, ci, N)
        f = torch.matmul(theta_x, phi_x) / (h * w)  # (B, N, N)
        y = torch.matmul(f, g_x).transpose(1, 2).reshape(b, ci, h, w)
        return x + self.W(y)


class ResNet(nn.Module):
    """ResNet backbone with torchvision parameter names.

    Args:
        arch: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        width: base width (channels of ``conv1``; stages have width x (1, 2, 4, 8) x
            expansion). 64 = torchvision / ImageNet weights.
        last_stride: stride of layer4 (2 = torchvision, 1 = re-ID practice).
        zero_init_residual: zero the last BN of every residual block (Goyal et al.
            2017), as torchvision's option of the same name.
        non_local: non-local blocks per stage, inserted after the last ``n`` blocks of
            that stage (AGW placement), e.g. ``(0, 2, 3, 0)``; ``None`` = none.
            Stored as ``NL_1`` ... ``NL_4`` (fast-reid names; absent when empty).
        non_local_inter_channels: see :class:`NonLocal` (default 1 = the authors' code).
        num_classes: when given, adds torchvision's ``avgpool`` + ``fc`` head and
            ``forward`` returns logits (B, num_classes); otherwise ``forward`` returns the
            layer-4 feature map and there is no ``fc``.

    Shapes: ``x`` (B, 3, H, W) -> (B, feat_dim, H/16, W/16) with last stride 1
    (H/32, W/32 with 2; sizes rounded up per stride-2 step).

    Initialisation as torchvision: Kaiming-normal (fan_out, ReLU) convs, BN weight 1
    and bias 0; non-local blocks keep PyTorch's default conv init and a zero ``W`` BN
    (fast-reid builds them after its backbone init), so they start as the identity.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        width: int = 64,
        last_stride: int = 2,
        zero_init_residual: bool = False,
        non_local: Sequence[int] | None = None,
        non_local_inter_channels: int | None = 1,
        num_classes: int | None = None,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r}: expected one of {sorted(ARCHS)}")
        if width < 1:
            raise ValueError(f"width={width}: expected a positive integer")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride={last_stride}: expected 1 or 2")
        kind, layers = ARCHS[arch]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.arch = arch
        self.width = int(width)
        self.last_stride = int(last_stride)
        self.layers = layers
        self.feat_dim = 8 * self.width * block.expansion

        self.inplanes = self.width
        self.conv1 = nn.Conv2d(3, self.width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, self.width, layers[0], 1)
        self.layer2 = self._make_layer(block, 2 * self.width, layers[1], 2)
        self.layer3 = self._make_layer(block, 4 * self.width, layers[2], 2)
        self.layer4 = self._make_layer(block, 8 * self.width, layers[3], self.last_stride)
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.feat_dim, num_classes)
        else:
            self.fc = None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

        counts = tuple(int(c) for c in (non_local or (0, 0, 0, 0)))
        if len(counts) != 4 or any(c < 0 or c > n for c, n in zip(counts, layers)):
            raise ValueError(
                f"non_local={tuple(non_local or ())}: expected 4 counts, each between 0 and the "
                f"blocks of its stage {layers} ({arch})"
            )
        self.non_local = counts
        # NL_k_idx: indices (within stage k) of the blocks followed by a non-local block.
        self._nl_idx: list[list[int]] = []
        for k, (c, n) in enumerate(zip(counts, layers), start=1):
            self._nl_idx.append(list(range(n - c, n)))
            if c:
                ch = (2 ** (k - 1)) * self.width * block.expansion
                setattr(
                    self,
                    f"NL_{k}",
                    nn.ModuleList(NonLocal(ch, non_local_inter_channels) for _ in range(c)),
                )

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> layer-4 feature map (B, feat_dim, h, w)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            idx = self._nl_idx[k - 1]
            if not idx:
                x = layer(x)
                continue
            nl = getattr(self, f"NL_{k}")
            j = 0
            for i, blk in enumerate(layer):
                x = blk(x)
                if i in idx:
                    x = nl[j](x)
                    j += 1
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        if self.fc is None:
            return x
        return self.fc(torch.flatten(self.avgpool(x), 1))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al. 2018), fast-reid ``GeneralizedMeanPoolingP``.

    ``f_c = (mean_{h,w} clamp(x_{c,h,w}, min=eps)^p)^(1/p)``; p=1 is average pooling,
    p -> inf max pooling. Computed in float32 (``x^p`` overflows float16 easily) and
    returned in the input dtype.

    Args:
        p: initial (or fixed) exponent, default 3.
        learnable: ``p`` is an ``nn.Parameter`` (key ``p``) when True, a constant otherwise.
        eps: lower clamp, keeps ``x^p`` defined and differentiable.

    Shapes: (B, C, H, W) -> (B, C).
    """

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6):
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p={p}: expected p > 0")
        self.learnable = bool(learnable)
        self.eps = float(eps)
        if self.learnable:
            self.p = nn.Parameter(torch.full((1,), float(p)))
        else:
            self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.float() if isinstance(self.p, Tensor) else self.p
        y = x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        p = float(self.p.detach()) if isinstance(self.p, Tensor) else self.p
        return f"p={p:.3g}, learnable={self.learnable}, eps={self.eps}"


class _GlobalPool(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "avg":
            return x.mean(dim=(2, 3))
        return x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return self.mode


class ReIDOutput(NamedTuple):
    """Training-mode output of :class:`ReIDNet`.

    Attributes:
        feat: (B, D) pooled feature before the BNNeck (triplet / distance losses).
        bn_feat: (B, D) feature after the BNNeck (identity / memory losses; the test
            feature).
    """

    feat: Tensor
    bn_feat: Tensor


class ReIDNet(nn.Module):
    """Backbone + global pooling + BNNeck.

    Parameter names: ``backbone.<torchvision name>`` (e.g. ``backbone.layer1.0.conv1.weight``),
    ``pool.p`` (learnable GeM), ``neck.weight`` / ``neck.bias`` / ``neck.running_*``.

    ``forward(x)``: train mode -> :class:`ReIDOutput` ``(feat, bn_feat)``, each (B, D);
    eval mode -> ``bn_feat`` (B, D), not L2-normalised. With ``neck="none"`` both are
    the pooled feature. Train mode needs B > 1 (batch statistics of the BNNeck).

    Attributes:
        feat_dim: D (512 * width / 64 for ResNet-18/34, 2048 * width / 64 for ResNet-50).
    """

    def __init__(self, backbone: ResNet, pool: nn.Module, neck: str = "bnneck"):
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.feat_dim = backbone.feat_dim
        if neck == "bnneck":
            self.neck: nn.Module = nn.BatchNorm1d(self.feat_dim)
            nn.init.ones_(self.neck.weight)
            nn.init.zeros_(self.neck.bias)
            self.neck.bias.requires_grad_(False)  # Luo et al. 2019: no shift
        elif neck in ("none", None):
            self.neck = nn.Identity()
        else:
            raise ValueError(f"neck={neck!r}: expected 'bnneck' or 'none'")

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> backbone feature map (B, D, h, w)."""
        return self.backbone.forward_features(x)

    def forward(self, x: Tensor) -> ReIDOutput | Tensor:
        feat = self.pool(self.backbone.forward_features(x))
        bn_feat = self.neck(feat)
        if self.training:
            return ReIDOutput(feat, bn_feat)
        return bn_feat


def build_model(
    name: str = "resnet18",
    width: int = 32,
    last_stride: int = 1,
    pooling: str = "gem",
    neck: str = "bnneck",
    non_local: bool | Sequence[int] = False,
    pretrained: str | os.PathLike | None = None,
    *,
    gem_p: float = 3.0,
    gem_learnable: bool = True,
    zero_init_residual: bool = False,
    non_local_inter_channels: int | None = 1,
) -> ReIDNet:
    """Build a :class:`ReIDNet`.

    Args:
        name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        width: base width; 32 is the CPU default, 64 = torchvision (needed for
            ImageNet weights).
        last_stride: 1 (default, re-ID practice and the authors' code) or 2.
        pooling: ``"gem"`` (default, p=``gem_p``, learnable unless ``gem_learnable=False``),
            ``"avg"`` or ``"max"``.
        neck: ``"bnneck"`` (default) or ``"none"``.
        non_local: ``True`` -> AGW placement ``(0, 2, 3, 0)`` (ResNet-50 or -34; ResNet-18
            has too few blocks), or explicit counts per stage; ``False`` -> none.
        pretrained: optional path of ImageNet weights in torchvision key format
            (``.pth`` / ``.safetensors``), loaded with :func:`load_pretrained`.
        gem_p: GeM exponent (default 3).
        gem_learnable: learn p (fast-reid ``GeneralizedMeanPoolingP``; default True).
        zero_init_residual: zero the last BN of each residual block.
        non_local_inter_channels: see :class:`NonLocal`.

    Returns:
        The model, in train mode, on the CPU. Seed torch first for a reproducible init.
    """
    if non_local is True:
        nl: Sequence[int] | None = AGW_NON_LOCAL
    elif non_local is False or non_local is None:
        nl = None
    else:
        nl = tuple(non_local)
    backbone = ResNet(
        name,
        width=width,
        last_stride=last_stride,
        zero_init_residual=zero_init_residual,
        non_local=nl,
        non_local_inter_channels=non_local_inter_channels,
    )
    if pooling == "gem":
        pool: nn.Module = GeM(gem_p, learnable=gem_learnable)
    elif pooling in ("avg", "max"):
        pool = _GlobalPool(pooling)
    else:
        raise ValueError(f"pooling={pooling!r}: expected 'gem', 'avg' or 'max'")
    model = ReIDNet(backbone, pool, neck=neck)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


class LoadResult(NamedTuple):
    """What :func:`load_pretrained` did, key names as in the model (``backbone.`` prefix
    for a :class:`ReIDNet`) for ``missing_keys`` and as in the file otherwise.

    Attributes:
        missing_keys: backbone entries the file does not provide (left as initialised),
            e.g. non-local blocks. BN ``num_batches_tracked`` counters are not listed
            (torchvision's ImageNet files omit them; they are set to 0).
        unexpected_keys: file entries with no counterpart in the backbone (not loaded).
        ignored_keys: file entries skipped on purpose (the ImageNet classifier ``fc.*``).
        loaded_keys: file entries copied into the model.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    ignored_keys: list[str]
    loaded_keys: list[str]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights: {path} does not exist (expected a .pth or .safetensors file)")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f"pretrained weights: {path} is a .safetensors file, but the safetensors package is "
                f"not installed (pip install safetensors), or convert it to .pth with torch.save"
            ) from e
        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as e:  # header or data corrupt
            raise ValueError(f"pretrained weights: could not read {path} as safetensors: {e}") from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickles with code objects, truncated files ...
            raise ValueError(
                f"pretrained weights: could not read {path} with torch.load(weights_only=True) "
                f"(expected a state dict of tensors): {e}"
            ) from e
    # Common wrappers: {"state_dict": ...} / {"model": ...}.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"pretrained weights: {path} holds a {type(obj).__name__}, expected a state dict")
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"pretrained weights: {path}: entry {k!r} is a {type(v).__name__}, expected a tensor")
        if k.startswith("module."):  # saved from DataParallel / DDP
            k = k[len("module.") :]
        out[k] = v
    return out


def load_pretrained(model: ReIDNet | ResNet, path: str | os.PathLike) -> LoadResult:
    """Load ImageNet weights in torchvision key format into the backbone of ``model``.

    The file is a state dict (``conv1.weight``, ``layer1.0.bn1.running_var``, ...):
    ``.safetensors`` (read with safetensors) or anything else via
    ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` / ``{"model": ...}``
    wrapper and a ``module.`` prefix are accepted. ``fc.*`` is ignored. Everything is
    checked before anything is copied, so a failed load leaves the model unchanged.

    Args:
        model: a :class:`ReIDNet` (its ``backbone`` is loaded; pooling and neck are
            untouched) or a bare :class:`ResNet`.
        path: the weights file.

    Returns:
        :class:`LoadResult` with the missing / unexpected / ignored / loaded key names
        (also logged at WARNING level when missing or unexpected is non-empty).

    Raises:
        ValueError: the backbone width is not 64 (ImageNet weights are width 64), or a
            tensor's shape differs (the message names the key and both shapes), or the
            file is not a state dict of tensors, or none of its keys matches the layout.
        FileNotFoundError: ``path`` does not exist.
    """
    if isinstance(model, ReIDNet):
        backbone, prefix = model.backbone, "backbone."
    elif isinstance(model, ResNet):
        backbone, prefix = model, ""
    else:
        raise TypeError(f"load_pretrained: expected a ReIDNet or ResNet, got {type(model).__name__}")
    path = Path(path)
    if backbone.width != 64:
        raise ValueError(
            f"load_pretrained({path}): the model has base width {backbone.width}, but ImageNet "
            f"weights are width 64; build the model with width=64 to use them"
        )
    src = _read_state_dict(path)
    own = backbone.state_dict()

    ignored = [k for k in src if k == "fc" or k.startswith("fc.")]
    unexpected = [k for k in src if k not in own and k not in ignored]
    loadable = {k: v for k, v in src.items() if k in own and k not in ignored}
    for k, v in loadable.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"load_pretrained({path}): shape mismatch for {k!r}: file has {tuple(v.shape)}, "
                f"model ({backbone.arch}, width {backbone.width}) expects {tuple(own[k].shape)}"
            )
    if not loadable:
        raise ValueError(
            f"load_pretrained({path}): no entry matches the torchvision ResNet layout of the model "
            f"(file keys start {sorted(src)[:3]}, expected e.g. 'conv1.weight', 'layer1.0.bn1.weight')"
        )
    missing = [
        prefix + k
        for k in own
        if k not in loadable and not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    ]
    backbone.load_state_dict(loadable, strict=False)
    if missing or unexpected:
        logger.warning(
            "load_pretrained(%s): %d missing keys %s; %d unexpected keys %s",
            path,
            len(missing),
            missing,
            len(unexpected),
            unexpected,
        )
    return LoadResult(missing, unexpected, ignored, sorted(loadable))
