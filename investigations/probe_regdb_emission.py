"""Can a supervised model match RegDB-synth's emission-rendered thermal frames to visible ones?

One RegDB-synth split, one seed: the calibration's model (d) recipe (identity labels,
cross-modality batches, luma gray view p 0.5) at the stage-2 input size, then
leave-one-out R1 within each modality and visible -> thermal R1 (whole thermal test half
as gallery). ``--curve`` replaces the gray view by a random non-monotone gray-level curve
(a probe: does forcing shape over intensity help?). ``--synth`` passes SynthConfig
overrides for the generated tree, e.g. ``"{'thermal_model': 'legacy', 'thermal_luma_weight': 0.9,
'thermal_random': 0.0}"`` (thermal nearly the visible luminance).

    python investigations/probe_regdb_emission.py --out /tmp/regdb_probe [--epochs 12] [--curve] [--synth "{...}"]

Diagnostic generators (``--variant``, see ``_patch_identities``): ``thermal_fixed`` (no
per-identity thermal randomness), ``vis_fixed`` (every identity the same visible colours),
``geometry`` (both), ``vis_shrink --shrink A`` (colours pulled towards the common ones).
``--train`` passes SupervisedConfig overrides (e.g. ``"{'gray_prob': 1.0}"``);
``--curve-all P`` turns any training image, of either modality, into a random gray-level
curve of its luma with probability P (an intensity-invariance bridge in the recipe).

``--pair-weight W [--pair-temp T] [--pair-feature pooled|bnneck]`` pairs each batch's visible
frames with their thermal twins (the same frame of the dual camera, :func:`twins`) and adds
W x a symmetric InfoNCE between them (a probe-only patch of the supervised trainer).

It also prints the training identities' own V->T R1 and the last epoch's accuracy and
triplet loss (memorised links on the training ids vs a feature that transfers).

Cost: about 30 s of training per 300 steps on 2 cores, plus 7 s of rendering.
Findings: ``investigations/regdb_emission.md``.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def _curve_gray(orig):
    def curve(x: torch.Tensor) -> torch.Tensor:
        g = orig(x)
        b = g.shape[0]
        knots = torch.rand(b, 6)
        idx = g[:, :1] * 5
        lo = idx.floor().clamp(0, 4).long()
        w = idx - lo
        k = knots.view(b, 6, 1, 1).expand(b, 6, *g.shape[-2:])
        v = torch.gather(k, 1, lo) * (1 - w) + torch.gather(k, 1, lo + 1) * w
        return v.expand_as(g).contiguous()

    return curve


class _Mid:
    """A stand-in random stream that returns the middle of every draw (no per-identity randomness)."""

    def uniform(self, lo=0.0, hi=1.0):
        return (lo + hi) / 2

    def normal(self, mu=0.0, sigma=1.0):
        return mu


def _patch_identities(variant: str, shrink: float = 0.0):
    """Diagnostic generators: remove per-identity intensity information from one or both modalities.

    ``thermal_fixed``: every identity's thermal emission is its cuts' and hair's mid value
    (no skin / fabric / accessory randomness). ``vis_fixed``: every identity wears the same
    colour per material (the visible image carries geometry only). ``geometry``: both.
    ``vis_shrink``: each identity's visible colours pulled towards the common ones,
    ``common + shrink * (own - common)`` (1: the default generator, 0: ``vis_fixed``).
    """
    from cmamlib.data.synth import people, writers

    orig = writers.make_identity
    base = None

    def make(seed, domain, pid, cfg):
        nonlocal base
        ident = orig(seed, domain, pid, cfg)
        if variant in ("vis_fixed", "geometry"):
            if base is None:
                base = orig(seed, domain, 10**6, cfg).vis.copy()
            ident.vis = base.copy()
        if variant == "vis_shrink":
            if base is None:
                base = orig(seed, domain, 10**6, cfg).vis.copy()
            ident.vis = (base + shrink * (ident.vis - base)).astype(np.float32)
        if variant in ("thermal_fixed", "geometry"):
            ident.thermal = people.thermal_emission(ident, _Mid())
        return ident

    writers.make_identity = make
    return lambda: setattr(writers, "make_identity", orig)


def _pretrain(args, cfg) -> str:
    """Train recipe (d) on a diagnostic generator's people (generator seed 1: other identities
    than the evaluated ones), save the backbone and return the file's path."""
    from cmamlib import experiments
    from cmamlib.data import synth
    from cmamlib.training.supervised import run_supervised

    restore = _patch_identities(args.pretrain, args.shrink)
    out = Path(args.out + "_pretrain_" + args.pretrain)
    synth.generate(out, synth.PRESETS["default"], seed=1, datasets=("regdb",), progress=False)
    restore()
    d = experiments.load_regdb(out / "RegDB-synth", args.split, tuple(args.size), progress=False)
    res = run_supervised(replace(cfg, epochs=args.pretrain_epochs), d.train.records, d.train.images, progress=False)
    path = out / "backbone.pt"
    torch.save(res.model.backbone.state_dict(), path)
    return str(path)


def twins(records) -> np.ndarray:
    """``(N,)`` index of each training image's other-modality twin: the k-th visible frame of an
    identity (by the serial in its RegDB file name) and its k-th thermal frame, which replays
    the visible frame's draws (pose, walk phase, window); -1 where an identity has no k-th."""
    by: dict = {}
    for i, r in enumerate(records):
        serial = int(Path(r.path).name.split("_")[-2])
        by.setdefault((r.pid, r.modality), []).append((serial, i))
    out = np.full(len(records), -1)
    for (pid, mod), rows in by.items():
        if mod == "visible":
            other = sorted(by.get((pid, "infrared"), []))
            for (_, i), (_, j) in zip(sorted(rows), other):
                out[i], out[j] = j, i
    return out


def _patch_paired(records, weight: float, temp: float, feature: str = "pooled") -> None:
    """Probe-only patch of the supervised trainer: batches of visible frames and their
    thermal twins, plus ``weight`` x a symmetric InfoNCE between the pooled features of each
    visible frame and the batch's thermal frames (its twin the positive; the other frames
    of the same identity, other poses, are negatives), at temperature ``temp``, on the pooled
    (``feature="pooled"``) or BNNeck features."""
    import torch.nn.functional as F

    import cmamlib.training.supervised as sup

    twin = twins(records)
    if (twin < 0).any():
        raise SystemExit(f"{int((twin < 0).sum())} training images without a twin")
    orig_begin, orig_step = sup.SupervisedStage.begin_epoch, sup.SupervisedStage.step

    def begin_epoch(self, epoch):
        row, batches = orig_begin(self, epoch)
        ir = self.is_ir_t.numpy()
        paired = []
        for b in batches:
            b = np.asarray(b)
            v = b[~ir[b]]
            paired.append(np.concatenate([v, twin[v]]))
        return row, paired

    def step(self, epoch, i, idx):
        outs = []  # the model's output of the trainer's own step, for the pair term
        hook = self.model.register_forward_hook(lambda module, inputs, out: outs.append(out))
        try:
            loss, parts = orig_step(self, epoch, i, idx)
        finally:
            hook.remove()
        out = outs[-1]
        nv = int((~self.is_ir_t[torch.as_tensor(idx)]).sum())
        f = F.normalize(out.feat if feature == "pooled" else out.bn_feat, dim=1)
        z = f[:nv] @ f[nv:].T / temp
        target = torch.arange(nv, device=z.device)
        l_pair = 0.5 * (F.cross_entropy(z, target) + F.cross_entropy(z.T, target))
        return loss + weight * l_pair, {**parts, "pair": l_pair}

    sup.SupervisedStage.begin_epoch, sup.SupervisedStage.step = begin_epoch, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the generated RegDB-synth")
    ap.add_argument("--synth", default="{}", help="SynthConfig overrides (a Python dict literal)")
    ap.add_argument("--train", default="{}", help="SupervisedConfig overrides (a Python dict literal)")
    ap.add_argument("--epochs", type=int, default=12, help="x 25 steps of 64 images")
    ap.add_argument("--split", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"), help="input size (64 32)")
    ap.add_argument(
        "--variant",
        default="default",
        choices=("default", "thermal_fixed", "vis_fixed", "geometry", "vis_shrink"),
        help="diagnostic generator (see _patch_identities)",
    )
    ap.add_argument(
        "--curve-all",
        type=float,
        default=0.0,
        help="probability that any training image (both modalities) is gray and remapped by a random gray-level curve",
    )
    ap.add_argument("--shrink", type=float, default=0.5, help="vis_shrink's factor (1: default colours, 0: fixed)")
    ap.add_argument(
        "--pretrain",
        default=None,
        choices=("thermal_fixed", "vis_fixed", "geometry", "vis_shrink"),
        help="first train on this diagnostic generator's people (other identities), then start from its backbone",
    )
    ap.add_argument("--pretrain-epochs", type=int, default=80, help="x 25 steps of the pretraining run")
    ap.add_argument("--curve", action="store_true", help="random gray-level curve instead of the luma gray view")
    ap.add_argument(
        "--pair-weight",
        type=float,
        default=0.0,
        help="weight of a paired-frame InfoNCE: each batch's thermal half becomes the visible half's twins "
        "(the same frame), and every visible frame must pick its own twin among the batch's thermal frames",
    )
    ap.add_argument("--pair-temp", type=float, default=0.1, help="the InfoNCE's temperature")
    ap.add_argument("--pair-feature", choices=("pooled", "bnneck"), default="pooled", help="the InfoNCE's features")
    args = ap.parse_args()

    import cmamlib.data.transforms as transforms
    from cmamlib import calibration, experiments
    from cmamlib.data import synth
    from cmamlib.training.supervised import SupervisedConfig, run_supervised

    if args.variant != "default":
        _patch_identities(args.variant, args.shrink)
    if args.curve_all > 0:
        import cmamlib.training.supervised as sup

        curve = _curve_gray(transforms.gray_luma)
        orig_aug = sup.augment

        def aug(x, cfg_aug, gen):
            sel = torch.rand(x.shape[0], generator=gen) < args.curve_all
            if sel.any():
                x = x.clone()
                x[sel] = curve(x[sel])
            return orig_aug(x, cfg_aug, gen)

        sup.augment = aug
    if args.curve:
        transforms.gray_luma = _curve_gray(transforms.gray_luma)
    cfg_synth = replace(synth.PRESETS["default"], **ast.literal_eval(args.synth))
    synth.generate(args.out, cfg_synth, seed=0, datasets=("regdb",), progress=False)
    d = experiments.load_regdb(Path(args.out) / "RegDB-synth", args.split, tuple(args.size), progress=False)
    cfg = calibration.model_config(
        "visible_infrared",
        SupervisedConfig(image_size=tuple(args.size), epochs=args.epochs, iters_per_epoch=25, seed=args.seed),
    )
    cfg = replace(cfg, **ast.literal_eval(args.train))
    if args.pretrain:
        import cmamlib.models as models

        cfg = replace(cfg, pretrained=_pretrain(args, cfg))
        models.load_pretrained = lambda model, path: model.backbone.load_state_dict(torch.load(path))
    if args.pair_weight > 0:
        _patch_paired(d.train.records, args.pair_weight, args.pair_temp, args.pair_feature)
    t0 = time.time()
    res = run_supervised(cfg, d.train.records, d.train.images, progress=False)
    model = res.model.eval()
    fn = experiments.model_features(model)
    fv, ft = fn(d.visible.images), fn(d.thermal.images)
    pv = np.array([r.pid for r in d.visible.records])
    pt = np.array([r.pid for r in d.thermal.records])

    def loo(f: torch.Tensor, p: np.ndarray) -> float:
        s = f @ f.T
        s.fill_diagonal_(-9)
        return float((p[s.argmax(1).numpy()] == p).mean())

    row = experiments.regdb_row(fn, d)
    # the training identities' own cross-modality retrieval: memorised or learned?
    ftr = fn(d.train.images)
    ptr = np.array([r.pid for r in d.train.records])
    vis = np.array([r.modality == "visible" for r in d.train.records])
    s_tr = ftr[torch.from_numpy(vis)] @ ftr[torch.from_numpy(~vis)].T
    train_v2t = float((ptr[~vis][s_tr.argmax(1).numpy()] == ptr[vis]).mean())
    last = res.history[-1]
    print(
        json.dumps(
            {
                "synth": args.synth,
                "curve": args.curve,
                "curve_all": args.curve_all,
                "variant": args.variant,
                "shrink": args.shrink if args.variant == "vis_shrink" else None,
                "train": args.train,
                "pretrain": [args.pretrain, args.pretrain_epochs * 25] if args.pretrain else None,
                "pair": [args.pair_weight, args.pair_temp, args.pair_feature] if args.pair_weight > 0 else None,
                "steps": args.epochs * 25,
                "size": list(args.size),
                "seconds": round(time.time() - t0, 1),
                "V->V loo R1": loo(fv, pv),
                "T->T loo R1": loo(ft, pt),
                "train V->T R1": train_v2t,
                "train acc (last epoch)": round(last["acc"], 4),
                "train triplet (last epoch)": round(last["triplet"], 4),
                **({"train pair InfoNCE (last epoch)": round(last["pair"], 4)} if "pair" in last else {}),
                **{k: round(v, 4) for k, v in row.items() if k.endswith(("R1", "mAP"))},
            }
        )
    )


if __name__ == "__main__":
    main()
