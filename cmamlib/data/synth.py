"""Procedural synthetic visible-infrared person re-ID benchmark, written in real layouts.

The embedded default dataset of the workbench: no real dataset or pretrained weight
can be downloaded here, so this module draws procedural pedestrians and writes them
to disk exactly as the real datasets are distributed, so the real readers
(:mod:`cmamlib.data.readers`) are the code that runs and is tested:

* ``SYSU-MM01-synth/``: target domain, SYSU-MM01 layout (``cam1``..``cam6/PPPP/NNNN.jpg``,
  ``exp/{train,val,test}_id.txt``, and the official-protocol files
  ``exp/rand_perm_cam.mat`` / ``exp/test_id.mat``, :func:`write_sysu_mm01_official`);
  cams 1, 2 (indoor) and 4, 5 (outdoor) visible, cams 3 (indoor) and 6 (outdoor)
  near-infrared, stored as gray 3-channel JPEGs.
* ``SYSU-MM02-synth/``: SYSU-MM02 layout as its authors' code reads it (``train/``,
  ``test/``, ``train.txt``, ``test_rgb.txt``, ``test_ir.txt``; dataset key
  ``sysumm02``), rendered by the SYSU-synth cameras with identities of its own.
* ``RegDB-synth/``: RegDB layout (``Visible/``, ``Thermal/``, ``idx/`` with 10 splits),
  a paired visible/thermal camera, thermal rendered from emissivity.
* ``Market-1501-synth/``: source domain, visible only, Market-1501 layout and file
  naming (``PPPP_cCsS_FFFFFF_NN.jpg``), other identities, other scenes, colour casts
  and lighting (a visible domain shift).

What survives the modality change (the identity's *shape*): body height and build,
head size, garment cut (sleeve length, coat / jacket / t-shirt / tank), trouser,
shorts or skirt and their length, textile patterns (stripes, checks, logo, two-tone),
hair style, hats, backpacks and bags.  What does not: colours.  Infrared intensity
comes from a per-material NIR reflectance that is *correlated with, but not a
function of,* the material's visible luminance (``ir = a*luma + (1-a)*u + dye``, with
``u`` drawn per material, see :class:`SynthConfig`): some garments turn brighter and
some darker than their gray value, stripes may vanish or invert, skin is bright and
hair mid-gray.  Cameras differ in viewpoint mix (front / back / side), pose, scene,
illumination, white balance, blur, noise, scale and native resolution.

Determinism: every identity and every image draws from its own
``numpy.random.default_rng`` seeded with ``(seed, domain, pid[, cam, index])`` and
JPEG encoding is deterministic, so the same seed gives byte-identical files whatever
the number of worker processes.

CLI: ``python -m cmamlib.data.synth --out data --preset default --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ----------------------------------------------------------------------------- materials
BG, SKIN, HAIR, UPPER, UPPER2, INNER, LOWER, LOWER2, SHOES, BAG, HAT = range(11)
N_MAT = 11
CANVAS_H, CANVAS_W = 128, 64

UPPER_CUTS = ("tshirt", "longsleeve", "tank", "jacket", "coat")
LOWER_CUTS = ("pants", "shorts", "skirt", "capri")
UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo", "twotone", "solid", "hstripes")
HAIR_STYLES = ("short", "long", "bald", "ponytail", "hat", "short")
BAGS = ("none", "backpack", "shoulder", "handbag", "none", "backpack")
VIEWS = ("front", "back", "left", "right")

DOMAIN_CODES = {"sysu": 1, "regdb": 2, "market": 3}


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SynthConfig:
    """Sizes and rendering knobs of one preset.

    Attributes:
        sysu_ids: identities of SYSU-MM01-synth (train + val + test).
        sysu_test_ids: of which test ids (SYSU-MM01: 96 of 491).
        sysu_val_ids: of which val ids (training uses train + val, as SYSU-MM01).
        sysu_vis_per_cam: images per (id, visible camera) where the id appears.
        sysu_ir_per_cam: images per (id, infrared camera) where the id appears.
        cam_presence: probability that an id appears in a given camera (at least two
            visible and one infrared camera are always kept).
        regdb_ids: identities of RegDB-synth (half train, half test per split; RegDB: 412).
        regdb_per_modality: images per id and modality (RegDB: 10).
        regdb_paired: RegDB was captured by a co-located visible + thermal dual camera,
            so its k-th visible and k-th thermal image of a person show the same pose,
            view, scale and background window; True renders RegDB-synth that way
            (reconstruction of the capture), False draws the two independently (the
            earlier generator). Supervised upper bound, 150 steps, splits 1-2: V->T / T->V
            R1 3.7 / 2.5% unpaired, 7.8 / 10.8% paired (still near chance: thermal
            intensities are unrelated to visible colour).
        regdb_sequence: RegDB's 10 images of a person are frames of one walk past the
            camera (one view, towards or away from it, as its file names say: ``front`` /
            ``back``); True renders them so (reconstruction of the capture: one view per
            person, the walking phase advancing 0.5-0.9 rad a frame), False draws a view
            and pose per image (the earlier generator).
        thermal_model: how RegDB-synth's far-infrared (thermal) camera sees a person.
            ``"emission"`` (default): the camera images emitted heat, not reflected light
            (:func:`thermal_emission`): skin hottest, hair next, a garment cooler the thicker
            its cut (tank < t-shirt < long sleeve < jacket < coat; trousers by their
            length) with a per-identity fabric term, printed patterns invisible, bags,
            shoes and hats near the ambient background; no lighting or shading, little
            texture, soft edges where the body turns away from the camera, a low-resolution
            blurry sensor with thermal noise and column fixed-pattern noise. Nothing in it
            depends on a visible colour. ``"legacy"``: the earlier generator's table
            (``0.45 + thermal_random * u + thermal_luma_weight * (luma - 0.5)``, lit and
            textured like the near-infrared cameras), under which a supervised visible +
            thermal model stayed near chance (V->T R1 6-8%).
        thermal_luma_weight / thermal_random: the ``"legacy"`` model's knobs (diagnostics of
            ``investigations/probe_regdb.py``; the emission model ignores them).
        market_train_ids / market_test_ids: Market-1501-synth identities.
        market_per_cam: images per (id, camera) where the id appears (6 cameras).
        ir_luma_weight: ``a`` in ``ir = a*luma + (1-a)*(u + dye)``: how much of a
            material's NIR reflectance its visible luminance explains (the rest is a
            per-material random value and a dye that turns some materials darker or
            brighter than their gray value). 0.9, measured with notebook 00's supervised
            upper bound (d) (one seed, 1,000 steps, 64x32): 0.55 -> 12.7% all-search R1,
            0.85 -> 40.9%, 0.9 -> 60.4% (with the brighter infrared scenes below and
            the gray view in (d)), 0.93 -> 55.7%, 0.95 -> 54.6%.
        pattern_freq: range of an identity's garment-pattern frequency (stripe / check
            cycles per body height, uniform). Patterns are the finest modality-invariant
            identity cue, so this range decides how much of it survives downsampling to
            the training input size. (3.5, 8) measured 54.2% (d) all-search R1 against
            60.4% for the default (seed 0; ``investigations/probe_generator.py``).
        ir_agc: automatic gain control of the infrared cameras (reconstruction of a
            real NIR camera's auto exposure): each frame's gain is set so that its
            99.5th-percentile intensity lands at ``ir_agc`` (times a +-8% per-image
            jitter) instead of following the camera's fixed light level; 0 turns it
            off (fixed gain: the bright outdoor NIR camera then clips many garments to
            white). Measured with ``investigations/probe_generator.py`` (64x32,
            ``reports/probes/generator.json``): 0.9 gives (d) all-search R1 51.2 / 51.1
            (seeds 0 / 1) against 60.4 for the default 0, so it stays off: the clipping
            is not what limits (d).
        ir_noise: sensor noise sigma of the infrared cameras (intensity in [0, 1]).
        ir_scene: range of the NIR intensity of a background material (uniform, per
            camera and material; unrelated to its visible colour). (0.2, 0.7): with
            the earlier (0.05, 0.5) and vignetting (0.25, 0.5) infrared backgrounds were
            nearly black, unlike any gray view, and the visible + gray calibration
            model (c) reached only 16.5% all-search mAP (26.1% after the change, one seed).
        ir_vignette: range of the infrared cameras' vignetting strength.
        ir_person_boost: extra gain on the person in NIR images (active illumination
            lights the near person more than the scene).
        vis_noise: sensor noise sigma of the visible cameras.
        jpeg_quality: JPEG quality of written images.
    """

    sysu_ids: int = 300
    sysu_test_ids: int = 60
    sysu_val_ids: int = 40
    sysu_vis_per_cam: int = 3
    sysu_ir_per_cam: int = 3
    cam_presence: float = 0.85
    regdb_ids: int = 206
    regdb_per_modality: int = 10
    regdb_paired: bool = True
    regdb_sequence: bool = True
    thermal_model: str = "emission"
    thermal_luma_weight: float = 0.1
    thermal_random: float = 0.25
    market_train_ids: int = 300
    market_test_ids: int = 60
    market_per_cam: int = 2
    ir_luma_weight: float = 0.9
    pattern_freq: tuple[float, float] = (7.0, 16.0)
    ir_agc: float = 0.0
    ir_noise: float = 0.035
    ir_scene: tuple[float, float] = (0.2, 0.7)
    ir_vignette: tuple[float, float] = (0.1, 0.3)
    ir_person_boost: float = 0.15
    vis_noise: float = 0.02
    jpeg_quality: int = 92


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(
        sysu_ids=24,
        sysu_test_ids=8,
        sysu_val_ids=4,
        sysu_vis_per_cam=2,
        sysu_ir_per_cam=2,
        regdb_ids=20,
        regdb_per_modality=4,
        market_train_ids=20,
        market_test_ids=8,
        market_per_cam=1,
    ),
    "small": SynthConfig(
        sysu_ids=120,
        sysu_test_ids=30,
        sysu_val_ids=15,
        regdb_ids=100,
        market_train_ids=120,
        market_test_ids=30,
    ),
    "default": SynthConfig(),
}


# ----------------------------------------------------------------------------- identities
def _rand_color(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour in linear-ish RGB [0, 1]: many neutrals, some saturated."""
    kind = rng.random()
    if kind < 0.35:  # neutral: black .. white, slight tint
        v = rng.choice([0.08, 0.15, 0.3, 0.5, 0.7, 0.88]) + rng.normal(0, 0.04)
        c = np.full(3, v) + rng.normal(0, 0.025, 3)
    else:
        h = rng.random()
        s = rng.uniform(0.35, 0.95) if kind > 0.55 else rng.uniform(0.15, 0.5)
        v = rng.uniform(0.2, 0.95)
        c = np.array(_hsv_to_rgb(h, s, v))
    return np.clip(c, 0.02, 0.98).astype(np.float32)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB values in [0, 1] (last axis = channels)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


@dataclass
class Identity:
    """Persistent attributes of one synthetic person (shape survives the modality change).

    ``vis`` (N_MAT, 3) holds the visible colour of each material, ``nir`` (N_MAT,) its
    near-infrared reflectance and ``thermal`` (N_MAT,) its thermal emission.
    """

    pid: int
    height: float
    build: float
    hip_ratio: float
    head: float
    torso: float
    upper_cut: str
    lower_cut: str
    upper_pattern: str
    pattern_freq: float
    pattern_phase: float
    lower_stripe: bool
    hair_style: str
    hair_len: float
    bag: str
    bag_side: int
    vis: np.ndarray
    nir: np.ndarray
    thermal: np.ndarray


def make_identity(seed: int, domain: str, pid: int, cfg: SynthConfig) -> Identity:
    """Draw the persistent attributes of identity ``pid`` of ``domain``."""
    rng = np.random.default_rng([seed, DOMAIN_CODES[domain], pid, 7])
    vis = np.zeros((N_MAT, 3), np.float32)
    for m in (UPPER, UPPER2, INNER, LOWER, LOWER2, SHOES, BAG, HAT):
        vis[m] = _rand_color(rng)
    if domain == "market":  # a visible domain shift of the population: warmer, brighter clothes
        vis = np.clip(vis * np.array([1.08, 1.0, 0.9], np.float32) + 0.04, 0.02, 0.98)
    skin_v = rng.uniform(0.25, 0.85)
    vis[SKIN] = np.clip(np.array([1.0, 0.78, 0.64]) * skin_v + rng.normal(0, 0.02, 3), 0, 1)
    hair_palette = np.array(
        [[0.05, 0.04, 0.03], [0.25, 0.15, 0.08], [0.55, 0.42, 0.25], [0.6, 0.6, 0.6], [0.85, 0.75, 0.5]]
    )
    vis[HAIR] = np.clip(hair_palette[rng.choice(5, p=[0.45, 0.25, 0.12, 0.08, 0.1])] + rng.normal(0, 0.02, 3), 0, 1)
    # Near-infrared reflectance: correlated with, not a function of, visible luminance.
    a = cfg.ir_luma_weight
    lum = luma(vis)
    u = rng.random(N_MAT)
    dye = rng.choice([-0.25, 0.0, 0.0, 0.3], size=N_MAT)  # some dyes turn dark, some bright in NIR
    nir = np.clip(a * lum + (1 - a) * u + dye * (1 - a), 0.04, 0.96).astype(np.float32)
    nir[SKIN] = np.clip(0.72 + 0.15 * (skin_v - 0.55) + rng.normal(0, 0.04), 0.5, 0.9)
    nir[HAIR] = np.clip(0.22 + 0.35 * lum[HAIR] + rng.normal(0, 0.05), 0.1, 0.6)
    # Thermal emission (RegDB): warm skin, clothes by thickness, cool accessories.
    thermal = np.clip(
        0.45 + cfg.thermal_random * rng.random(N_MAT) + cfg.thermal_luma_weight * (lum - 0.5), 0.1, 0.9
    ).astype(np.float32)
    thermal[SKIN] = rng.uniform(0.85, 0.97)
    thermal[HAIR] = rng.uniform(0.55, 0.7)
    thermal[BAG] = rng.uniform(0.15, 0.35)
    thermal[SHOES] = rng.uniform(0.2, 0.4)
    ident = Identity(
        pid=pid,
        height=float(rng.uniform(0.86, 1.0)),
        build=float(rng.uniform(0.8, 1.25)),
        hip_ratio=float(rng.uniform(0.72, 1.0)),
        head=float(rng.uniform(0.9, 1.12)),
        torso=float(rng.uniform(0.27, 0.34)),
        upper_cut=str(rng.choice(UPPER_CUTS)),
        lower_cut=str(rng.choice(LOWER_CUTS, p=[0.55, 0.15, 0.18, 0.12])),
        upper_pattern=str(rng.choice(UPPER_PATTERNS)),
        pattern_freq=float(rng.uniform(*cfg.pattern_freq)),
        pattern_phase=float(rng.uniform(0, 2 * math.pi)),
        lower_stripe=bool(rng.random() < 0.2),
        hair_style=str(rng.choice(HAIR_STYLES)),
        hair_len=float(rng.uniform(0.05, 0.2)),
        bag=str(rng.choice(BAGS)),
        bag_side=int(rng.choice([-1, 1])),
        vis=vis,
        nir=nir,
        thermal=thermal,
    )
    if cfg.thermal_model == "emission":  # drawn from a stream of its own: every other attribute is unchanged
        ident.thermal = thermal_emission(ident, np.random.default_rng([seed, DOMAIN_CODES[domain], pid, 11]))
    elif cfg.thermal_model != "legacy":
        raise ValueError(f"thermal_model={cfg.thermal_model!r}: expected 'emission' or 'legacy'")
    return ident


#: Thermal insulation of each upper-garment cut (0: skin temperature, 1: ambient): the
#: thicker the garment, the cooler its outer surface.
UPPER_INSULATION = {"tank": 0.12, "tshirt": 0.18, "longsleeve": 0.28, "jacket": 0.45, "coat": 0.6}
#: The same for the lower garments (a skirt hangs away from the body: an air gap).
LOWER_INSULATION = {"shorts": 0.22, "capri": 0.3, "pants": 0.34, "skirt": 0.42}


def thermal_emission(ident: Identity, rng: np.random.Generator) -> np.ndarray:
    """Far-infrared emission (N_MAT,) in [0, 1] of each material of ``ident`` (RegDB's thermal camera).

    A reconstruction of long-wave infrared physics at the scale of a pedestrian crop: the
    camera images the surface temperature (emissivity of skin and textiles ~0.95), so

    * skin is the hottest surface (per identity 0.86-0.96), hair a little cooler (it
      insulates the scalp; long hair more);
    * a garment's surface sits between skin and ambient by its insulation: its cut's
      thickness (:data:`UPPER_INSULATION`, :data:`LOWER_INSULATION`) plus a fabric term
      drawn per identity (wool, denim, synthetics: +-0.08), so a coat is cool and a tank
      top nearly skin-warm; the inner shirt of an open jacket is warm;
    * a printed pattern (``UPPER2`` / ``LOWER2``) is the same fabric: it differs by a
      trace only, so stripes and logos vanish;
    * bags, shoes and hats are not body-heated: near the ambient background (0.15-0.4).

    Nothing here reads the visible colours ``ident.vis``: thermal intensity is unrelated
    to visible luminance over clothing (``tests/test_synth.py`` measures it).

    Args:
        ident: the identity (its cuts, hair style and bag; ``thermal`` is not read).
        rng: the identity's thermal stream.
    """
    t = np.zeros(N_MAT, np.float32)
    skin = rng.uniform(0.86, 0.96)
    span = skin - 0.25  # skin .. ambient
    t[SKIN] = skin
    t[HAIR] = skin - rng.uniform(0.12, 0.2) - (0.06 if ident.hair_style in ("long", "ponytail") else 0.0)
    up = skin - span * (UPPER_INSULATION[ident.upper_cut] + rng.uniform(-0.08, 0.08))
    low = skin - span * (LOWER_INSULATION[ident.lower_cut] + rng.uniform(-0.08, 0.08))
    t[UPPER], t[LOWER] = up, low
    t[UPPER2] = up + rng.normal(0, 0.012)
    t[LOWER2] = low + rng.normal(0, 0.012)
    t[INNER] = skin - span * rng.uniform(0.1, 0.2)
    t[HAT] = rng.uniform(0.3, 0.45)
    t[BAG] = rng.uniform(0.15, 0.35)
    t[SHOES] = rng.uniform(0.2, 0.4)  # BG stays 0: background pixels come from the scene
    return np.clip(t, 0.05, 0.98).astype(np.float32)


# ----------------------------------------------------------------------------- cameras
@dataclass
class Camera:
    """One camera: modality, scene, viewpoint mix, optics and output size."""

    cam: int
    modality: str  # "visible", "nir" or "thermal"
    scene_mat: np.ndarray  # (Hs, Ws) uint8 background material map
    scene_vis: np.ndarray  # (K, 3) visible colour of each background material
    scene_ir: np.ndarray  # (K,) infrared intensity of each background material
    view_p: np.ndarray  # (4,) probabilities of front/back/left/right
    light: float
    wb: np.ndarray  # (3,) white-balance gains
    blur: float
    noise: float
    scale: float
    size: tuple[int, int]  # (H, W) native output size
    vignette: float


def _make_scene(rng: np.random.Generator, kind: str, hs: int = 176, ws: int = 112) -> np.ndarray:
    """A background material map: walls/floor (indoor) or sky/foliage/road (outdoor)."""
    m = np.zeros((hs, ws), np.uint8)
    im = Image.fromarray(m)
    d = ImageDraw.Draw(im)
    horizon = int(hs * rng.uniform(0.45, 0.7))
    d.rectangle((0, horizon, ws, hs), fill=1)  # floor / road
    n_obj = int(rng.integers(3, 8))
    for _ in range(n_obj):
        k = int(rng.integers(2, 8))
        x0 = int(rng.integers(-10, ws))
        y0 = int(rng.integers(0, horizon))
        w = int(rng.integers(6, 40))
        h = int(rng.integers(8, 70)) if kind == "indoor" else int(rng.integers(10, 50))
        if kind == "outdoor" and rng.random() < 0.5:
            d.ellipse((x0, y0, x0 + w, y0 + h), fill=k)  # foliage
        else:
            d.rectangle((x0, y0, x0 + w, y0 + h), fill=k)  # doors, windows, posters, poles
    for _ in range(int(rng.integers(1, 4))):  # floor tiles / road marks
        y = int(rng.integers(horizon, hs))
        d.line((0, y, ws, y + int(rng.integers(-8, 8))), fill=int(rng.integers(2, 8)), width=2)
    return np.asarray(im).copy()


def make_cameras(seed: int, domain: str, cfg: SynthConfig) -> dict[int, Camera]:
    """The cameras of a synthetic dataset (SYSU: 1-6, Market: 1-6, RegDB: 1 visible, 2 thermal)."""
    rng = np.random.default_rng([seed, DOMAIN_CODES[domain], 999])
    if domain == "sysu":
        spec = {
            1: ("visible", "indoor"),
            2: ("visible", "indoor"),
            3: ("nir", "indoor"),
            4: ("visible", "outdoor"),
            5: ("visible", "outdoor"),
            6: ("nir", "outdoor"),
        }
        sizes = {1: (128, 64), 2: (136, 68), 3: (128, 64), 4: (120, 60), 5: (128, 64), 6: (144, 72)}
    elif domain == "market":
        spec = {c: ("visible", "outdoor" if c % 2 else "indoor") for c in range(1, 7)}
        sizes = {c: (128, 64) for c in range(1, 7)}
    elif domain == "regdb":
        spec = {1: ("visible", "outdoor"), 2: ("thermal", "outdoor")}
        sizes = {1: (128, 64), 2: (128, 64)}
    else:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAIN_CODES)}")
    cams: dict[int, Camera] = {}
    shared_scene = _make_scene(rng, "outdoor") if domain == "regdb" else None
    for cam, (modality, kind) in spec.items():
        scene = shared_scene if shared_scene is not None else _make_scene(rng, kind)
        k = 8
        if domain == "market":  # other scenes: sunny campus, warm casts, brighter
            scene_vis = np.clip(rng.uniform(0.3, 0.95, (k, 3)) * np.array([1.1, 1.0, 0.8]), 0, 1)
            wb = np.array([1.12, 1.0, 0.82]) * (1 + rng.normal(0, 0.07, 3))
            light = rng.uniform(0.95, 1.25)
        else:
            base = rng.uniform(0.15, 0.8, (1, 3))
            scene_vis = np.clip(base + rng.normal(0, 0.18, (k, 3)), 0.02, 0.98)
            wb = 1 + rng.normal(0, 0.1, 3)
            light = rng.uniform(0.7, 1.1)
        scene_ir = rng.uniform(cfg.ir_scene[0], cfg.ir_scene[1], k)  # NIR background, unrelated to colour
        if modality == "thermal":
            scene_ir = rng.uniform(0.1, 0.4, k)
        view_p = rng.dirichlet(np.full(4, 1.5))
        cams[cam] = Camera(
            cam=cam,
            modality=modality,
            scene_mat=scene,
            scene_vis=scene_vis.astype(np.float32),
            scene_ir=scene_ir.astype(np.float32),
            view_p=view_p,
            light=float(light),
            wb=wb.astype(np.float32),
            blur=float(rng.uniform(0.3, 0.8) if modality == "visible" else rng.uniform(0.6, 1.1)),
            noise=cfg.vis_noise if modality == "visible" else cfg.ir_noise,
            scale=float(rng.uniform(0.74, 0.9)),
            size=sizes[cam],
            vignette=float(rng.uniform(0.0, 0.2) if modality == "visible" else rng.uniform(*cfg.ir_vignette)),
        )
    if domain == "regdb" and cfg.regdb_paired:  # one dual camera: same viewpoint mix and scale
        cams[2].view_p, cams[2].scale = cams[1].view_p, cams[1].scale
    return cams


# ----------------------------------------------------------------------------- rendering
_YY, _XX = np.mgrid[0:CANVAS_H, 0:CANVAS_W].astype(np.float32)


class _Draw:
    """ImageDraw wrapper that accepts boxes with corners in any order."""

    def __init__(self, im: Image.Image):
        self._d = ImageDraw.Draw(im)

    @staticmethod
    def _box(b):
        x0, y0, x1, y1 = b
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def rectangle(self, b, fill):
        self._d.rectangle(self._box(b), fill=fill)

    def rounded_rectangle(self, b, radius, fill):
        self._d.rounded_rectangle(self._box(b), radius=radius, fill=fill)

    def ellipse(self, b, fill):
        self._d.ellipse(self._box(b), fill=fill)

    def chord(self, b, start, end, fill):
        self._d.chord(self._box(b), start, end, fill=fill)

    def polygon(self, pts, fill):
        self._d.polygon(pts, fill=fill)

    def line(self, pts, fill, width):
        self._d.line(pts, fill=fill, width=width)


def _draw_person(ident: Identity, view: str, rng: np.random.Generator, cam_scale: float, phase: float | None = None):
    """Material map (H, W) uint8 of one pedestrian, plus its geometry for patterns.

    ``phase``: the walking cycle's phase (radians; None: drawn from ``rng``, which draws
    it either way so that the rest of the image's stream is unchanged)."""
    im = Image.new("L", (CANVAS_W, CANVAS_H), BG)
    d = _Draw(im)
    ph = CANVAS_H * cam_scale * ident.height * rng.uniform(0.94, 1.06)
    cx = CANVAS_W / 2 + rng.normal(0, 2.0)
    feet = CANVAS_H * rng.uniform(0.93, 0.99)
    top = feet - ph
    side = view in ("left", "right")
    facing = {"left": -1, "right": 1}.get(view, 0)
    wmul = 0.58 if side else 1.0
    r_head = 0.062 * ph * ident.head
    head_cy = top + r_head
    sh_y = top + 2 * r_head + 0.025 * ph
    hip_y = sh_y + ident.torso * ph
    sw = 0.25 * ph * ident.build * wmul / 2  # half shoulder width
    hw = sw * ident.hip_ratio * (1.05 if side else 1.0)
    drawn_phase = rng.uniform(0, 2 * math.pi)
    phase = drawn_phase if phase is None else phase
    stride = (0.13 if side else 0.035) * ph * math.sin(phase)
    arm_swing = (0.08 if side else 0.02) * ph * math.sin(phase)
    leg_w = max(2.0, 0.075 * ph * ident.build * (0.8 if side else 1.0))

    # Legs (skin first, then the lower garment over the covered part), shoes.
    leg_xs = [cx - hw * 0.5, cx + hw * 0.5] if not side else [cx, cx]
    foot_xs = [leg_xs[0] - stride, leg_xs[1] + stride]
    cover = {"pants": 1.0, "capri": 0.72, "shorts": 0.4, "skirt": 0.0}[ident.lower_cut]
    for lx, fx in zip(leg_xs, foot_xs):
        d.polygon(
            [(lx - leg_w, hip_y), (lx + leg_w, hip_y), (fx + leg_w * 0.7, feet), (fx - leg_w * 0.7, feet)], fill=SKIN
        )
        if cover > 0:
            ky = hip_y + (feet - hip_y) * cover
            kx = lx + (fx - lx) * cover
            w2 = leg_w * (1 - 0.3 * cover)
            d.polygon(
                [(lx - leg_w - 0.5, hip_y), (lx + leg_w + 0.5, hip_y), (kx + w2 + 0.5, ky), (kx - w2 - 0.5, ky)],
                fill=LOWER,
            )
        d.ellipse((fx - leg_w * 1.1 + facing * 2, feet - 3.5, fx + leg_w * 1.1 + facing * 2, feet + 1), fill=SHOES)
    if ident.lower_cut == "skirt":
        sk_y = hip_y + (feet - hip_y) * rng.uniform(0.38, 0.42)
        d.polygon(
            [(cx - hw * 1.05, hip_y - 1), (cx + hw * 1.05, hip_y - 1), (cx + hw * 1.6, sk_y), (cx - hw * 1.6, sk_y)],
            fill=LOWER,
        )
    if ident.lower_stripe and cover > 0:  # track-pants side stripe
        for lx, fx in zip(leg_xs, foot_xs):
            sx = lx + (leg_w * 0.7 if not side else 0)
            d.line((sx, hip_y + 1, sx + (fx - lx) * cover, hip_y + (feet - hip_y) * cover), fill=LOWER2, width=1)

    # Backpack behind the body on side views.
    if ident.bag == "backpack" and side:
        bx = cx - facing * sw * 1.3
        d.rounded_rectangle(
            (bx - sw * 0.7, sh_y + 2, bx + sw * 0.7, sh_y + 0.65 * (hip_y - sh_y) + 4), radius=2, fill=BAG
        )

    # Torso (a coat extends over the thighs).
    bottom = hip_y + (0.22 * (feet - hip_y) if ident.upper_cut == "coat" else 1)
    d.polygon([(cx - sw, sh_y), (cx + sw, sh_y), (cx + hw * 1.05, bottom), (cx - hw * 1.05, bottom)], fill=UPPER)
    if ident.upper_cut == "jacket" and view == "front":
        d.polygon(
            [(cx - sw * 0.28, sh_y), (cx + sw * 0.28, sh_y), (cx + sw * 0.22, bottom), (cx - sw * 0.22, bottom)],
            fill=INNER,
        )

    # Arms: sleeve part in the garment, the rest skin.
    sleeve = {"tshirt": 0.35, "longsleeve": 0.92, "tank": 0.0, "jacket": 0.95, "coat": 0.95}[ident.upper_cut]
    arm_len = 0.36 * ph
    arm_w = max(1.5, 0.05 * ph * ident.build)
    arms = [(-1, -arm_swing), (1, arm_swing)] if not side else [(0, arm_swing)]
    hand_pts = []
    for s, swing in arms:
        ax = cx + s * (sw + arm_w * 0.6) if not side else cx + facing * 1.5
        hx = ax + swing + s * 1.5
        hy = sh_y + arm_len
        d.polygon(
            [(ax - arm_w, sh_y + 1), (ax + arm_w, sh_y + 1), (hx + arm_w * 0.8, hy), (hx - arm_w * 0.8, hy)], fill=SKIN
        )
        if sleeve > 0:
            ex, ey = ax + (hx - ax) * sleeve, sh_y + arm_len * sleeve
            d.polygon(
                [(ax - arm_w - 0.5, sh_y), (ax + arm_w + 0.5, sh_y), (ex + arm_w + 0.3, ey), (ex - arm_w - 0.3, ey)],
                fill=UPPER,
            )
        d.ellipse((hx - arm_w, hy - arm_w * 0.5, hx + arm_w, hy + arm_w * 1.5), fill=SKIN)
        hand_pts.append((hx, hy))

    # Head, hair, hat.
    hx0, hx1 = cx - r_head * (0.85 if side else 0.8), cx + r_head * (0.85 if side else 0.8)
    d.rectangle((cx - r_head * 0.35, head_cy + r_head * 0.6, cx + r_head * 0.35, sh_y + 1), fill=SKIN)  # neck
    face = HAIR if view == "back" and ident.hair_style != "bald" else SKIN
    d.ellipse((hx0, top, hx1, top + 2 * r_head), fill=face)
    long_hair = ident.hair_style in ("long", "ponytail")
    if ident.hair_style not in ("bald", "hat"):
        d.chord((hx0 - 0.5, top - 0.8, hx1 + 0.5, top + 1.5 * r_head), 180, 360, fill=HAIR)
        if long_hair:
            L = ident.hair_len * ph
            if view == "back":
                d.rectangle((cx - r_head * 0.85, head_cy, cx + r_head * 0.85, head_cy + L + r_head), fill=HAIR)
            elif side:
                d.rectangle(
                    (cx - facing * r_head * 0.9 - 1.5, head_cy - 1, cx - facing * r_head * 0.3, head_cy + L), fill=HAIR
                )
            else:
                for s in (-1, 1):
                    d.rectangle(
                        (cx + s * r_head * 0.95 - 1.2, head_cy - 1, cx + s * r_head * 0.95 + 1.2, head_cy + L * 0.8),
                        fill=HAIR,
                    )
    if ident.hair_style == "hat":
        d.chord((hx0 - 1.5, top - 2.5, hx1 + 1.5, top + 1.4 * r_head), 180, 360, fill=HAT)
        d.rectangle((hx0 - 2 + facing * 2, top + 0.55 * r_head, hx1 + 2 + facing * 2, top + 0.75 * r_head), fill=HAT)

    # Bags over the torso.
    if ident.bag == "backpack" and view == "back":
        d.rounded_rectangle(
            (cx - sw * 0.72, sh_y + 2, cx + sw * 0.72, sh_y + 0.7 * (hip_y - sh_y) + 3), radius=2, fill=BAG
        )
    elif ident.bag == "backpack" and view == "front":
        for s in (-1, 1):
            d.line((cx + s * sw * 0.55, sh_y, cx + s * sw * 0.6, sh_y + 0.5 * (hip_y - sh_y)), fill=BAG, width=2)
    elif ident.bag == "shoulder":
        s = ident.bag_side if view != "back" else -ident.bag_side
        if not side:
            d.line((cx - s * sw * 0.8, sh_y, cx + s * hw, hip_y - 1), fill=BAG, width=1)
            d.rectangle((cx + s * hw - 3, hip_y - 5, cx + s * hw + 4, hip_y + 5), fill=BAG)
        else:
            d.rectangle((cx - 3, hip_y - 5, cx + 4, hip_y + 5), fill=BAG)
    elif ident.bag == "handbag" and hand_pts:
        hx_, hy_ = hand_pts[-1] if ident.bag_side > 0 or side else hand_pts[0]
        d.rectangle((hx_ - 3.5, hy_, hx_ + 3.5, hy_ + 7), fill=BAG)

    mat = np.array(im)
    # Garment patterns in person-local coordinates (move with the body, survive modality).
    u = (_XX - cx) / ph
    v = (_YY - top) / ph
    up = mat == UPPER
    f, p0 = ident.pattern_freq, ident.pattern_phase
    pat = ident.upper_pattern
    if pat == "hstripes":
        mask = np.sin(2 * math.pi * f * v + p0) > 0.2
    elif pat == "vstripes":
        mask = np.sin(2 * math.pi * f * u / wmul + p0) > 0.2
    elif pat == "checks":
        mask = (np.sin(2 * math.pi * f * v + p0) > 0) ^ (np.sin(2 * math.pi * f * u / wmul + p0) > 0)
    elif pat == "logo" and view == "front":
        chest = (sh_y - top) / ph + 0.09
        mask = (np.abs(u) < 0.045) & (np.abs(v - chest) < 0.04)
    elif pat == "twotone":
        mask = v > (sh_y - top) / ph + ident.torso * 0.5
    else:
        mask = None
    if mask is not None:
        mat[up & mask] = UPPER2
    return mat, (cx, top, ph)


def render_image(
    ident: Identity,
    cam: Camera,
    rng: np.random.Generator,
    cfg: SynthConfig,
    market_shift: bool = False,
    view: str | None = None,
    phase: float | None = None,
    return_materials: bool = False,
) -> Image.Image | tuple[Image.Image, np.ndarray]:
    """Render one image of ``ident`` seen by ``cam`` (RGB for visible, gray-as-RGB for IR).

    ``view`` / ``phase``: the person's view and walking phase when the image is a frame
    of a walking sequence (RegDB-synth); None draws them (the stream is the same either way).
    ``return_materials``: also return the (CANVAS_H, CANVAS_W) uint8 material map drawn
    (``BG`` = background; the physics tests read it)."""
    drawn_view = VIEWS[int(rng.choice(4, p=cam.view_p))]
    view = drawn_view if view is None else view
    mat, _ = _draw_person(ident, view, rng, cam.scale * rng.uniform(0.95, 1.05), phase)
    fg = mat != BG
    # Background: a random window of the camera's scene.
    hs, ws = cam.scene_mat.shape
    oy = int(rng.integers(0, hs - CANVAS_H + 1))
    ox = int(rng.integers(0, ws - CANVAS_W + 1))
    bgm = cam.scene_mat[oy : oy + CANVAS_H, ox : ox + CANVAS_W]
    # Shading: cylindrical body shading + a vertical light gradient, per image light direction.
    lx = rng.uniform(-0.4, 0.4)
    shade = 1.0 - 0.25 * ((_XX - CANVAS_W / 2) / (CANVAS_W / 2) - lx) ** 2
    shade *= 1.0 + rng.uniform(-0.15, 0.15) * (_YY / CANVAS_H - 0.5)
    tex = 1.0 + rng.normal(0, 0.035, (CANVAS_H, CANVAS_W)).astype(np.float32)  # fabric texture
    yy = (_YY / CANVAS_H - 0.5) * 2
    xx = (_XX / CANVAS_W - 0.5) * 2
    vign = 1.0 - cam.vignette * (0.6 * xx**2 + 0.4 * yy**2)
    gain = cam.light * rng.uniform(0.85, 1.15)
    if cam.modality == "visible":
        col = ident.vis[mat] * (shade * tex)[..., None]
        col[~fg] = cam.scene_vis[bgm][~fg] * (1 + rng.normal(0, 0.02))
        wb = cam.wb * (1 + rng.normal(0, 0.03, 3))
        img = col * wb * gain * vign[..., None]
        img = img + rng.normal(0, cam.noise, img.shape)
        img = np.clip(img, 0, 1) ** (1 / 1.15)
        arr = (img * 255 + 0.5).astype(np.uint8)
    elif cam.modality == "thermal" and cfg.thermal_model == "emission":
        arr = _thermal_pixels(ident.thermal[mat], fg, cam.scene_ir[bgm], tex, gain, cam.noise, rng)
    else:
        table = ident.nir if cam.modality == "nir" else ident.thermal
        ir = table[mat] * shade * tex
        bg_int = cam.scene_ir[bgm] * (0.8 if cam.modality == "nir" else 1.0)
        ir = np.where(fg, ir, bg_int)
        # Active NIR illumination: the person (near the camera) is lit more than the scene.
        boost = 1.0 + (cfg.ir_person_boost if cam.modality == "nir" else 0.0) * fg
        if cfg.ir_agc > 0:  # auto exposure: the frame's highlights land at the target level
            gain = cfg.ir_agc * rng.uniform(0.92, 1.08) / max(float(np.percentile(ir * vign * boost, 99.5)), 1e-3)
        ir = ir * gain * vign * boost
        ir = ir + rng.normal(0, cam.noise, ir.shape)
        ir = np.clip(ir, 0, 1)
        g = (ir * 255 + 0.5).astype(np.uint8)
        arr = np.repeat(g[..., None], 3, axis=2)
    im = Image.fromarray(arr, "RGB")
    blur = cam.blur * rng.uniform(0.8, 1.25)
    if cam.modality == "thermal" and cfg.thermal_model == "emission":
        blur += THERMAL_EXTRA_BLUR  # a low-resolution microbolometer; heat spreads across seams
    if blur > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    if cam.size != (CANVAS_H, CANVAS_W):
        im = im.resize((cam.size[1], cam.size[0]), Image.BILINEAR)
    return (im, mat) if return_materials else im


#: Extra Gaussian blur (canvas pixels) of the thermal camera on top of its optics'.
THERMAL_EXTRA_BLUR = 0.7


def _thermal_pixels(
    emission: np.ndarray,
    fg: np.ndarray,
    background: np.ndarray,
    tex: np.ndarray,
    gain: float,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A thermal frame (H, W, 3) uint8 from per-pixel emission (:func:`thermal_emission`).

    No lighting or shading (emitted, not reflected, radiation). The body's outline is a
    little cooler (its surface turns away from the camera, and emissivity falls at grazing
    angles); fabric folds leave a quarter of the visible texture; the display gain varies
    per frame (the camera's automatic level); sensor noise plus column fixed-pattern noise
    of a microbolometer.

    Args:
        emission: (H, W) emission of the person's material at each pixel.
        fg: (H, W) bool person mask.
        background: (H, W) thermal intensity of the scene window (cool, 0.1-0.4).
        tex: (H, W) the image's fabric texture (mean 1).
        gain: the frame's level.
        noise: sensor noise sigma.
        rng: the image's stream.
    """
    soft = np.asarray(Image.fromarray(fg.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    edge = 0.78 + 0.22 * (soft / 255.0)
    body = emission * edge * (1.0 + 0.25 * (tex - 1.0))
    t = np.where(fg, body, background) * gain
    t = t + rng.normal(0, noise, t.shape) + rng.normal(0, 0.4 * noise, (1, t.shape[1]))
    g = (np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


# ----------------------------------------------------------------------------- writers
@dataclass(frozen=True)
class _Job:
    path: str
    domain: str
    pid: int
    cam: int
    index: int
    fmt: str = "JPEG"
    rng_cam: int | None = None  # camera of the image's random stream (None: ``cam``)
    view: str | None = None  # a walking sequence's view (None: drawn per image)
    phase: float | None = None  # a walking sequence's phase (None: drawn per image)


def job_rng(seed: int, job: _Job) -> np.random.Generator:
    """The random stream of one image: ``(seed, domain, pid, camera, index)``, where a paired
    thermal frame uses its visible twin's camera (``rng_cam``)."""
    rng_cam = job.cam if job.rng_cam is None else job.rng_cam
    return np.random.default_rng([seed, DOMAIN_CODES[job.domain], job.pid, rng_cam, job.index])


def _render_jobs(args: tuple[int, SynthConfig, list[_Job]]) -> int:
    seed, cfg, jobs = args
    idents: dict[tuple[str, int], Identity] = {}
    cams: dict[str, dict[int, Camera]] = {}
    for job in jobs:
        key = (job.domain, job.pid)
        if key not in idents:
            idents[key] = make_identity(seed, job.domain, job.pid, cfg)
        if job.domain not in cams:
            cams[job.domain] = make_cameras(seed, job.domain, cfg)
        rng = job_rng(seed, job)
        im = render_image(idents[key], cams[job.domain][job.cam], rng, cfg, view=job.view, phase=job.phase)
        Path(job.path).parent.mkdir(parents=True, exist_ok=True)
        if job.fmt == "JPEG":
            im.save(job.path, "JPEG", quality=cfg.jpeg_quality)
        else:
            im.save(job.path, job.fmt)
    return len(jobs)


def _sysu_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], dict]:
    rng = np.random.default_rng([seed, 101])
    pids = np.sort(rng.choice(np.arange(1, 1000), cfg.sysu_ids, replace=False))
    perm = rng.permutation(pids)
    test = np.sort(perm[: cfg.sysu_test_ids])
    val = np.sort(perm[cfg.sysu_test_ids : cfg.sysu_test_ids + cfg.sysu_val_ids])
    train = np.sort(perm[cfg.sysu_test_ids + cfg.sysu_val_ids :])
    jobs: list[_Job] = []
    vis_cams, ir_cams = [1, 2, 4, 5], [3, 6]
    for pid in pids:
        r = np.random.default_rng([seed, 102, int(pid)])
        present_v = [c for c in vis_cams if r.random() < cfg.cam_presence]
        present_i = [c for c in ir_cams if r.random() < cfg.cam_presence]
        while len(present_v) < 2:
            present_v = sorted(set(present_v) | {int(r.choice(vis_cams))})
        if not present_i:
            present_i = [int(r.choice(ir_cams))]
        for c in sorted(present_v + present_i):
            n = cfg.sysu_vis_per_cam if c in vis_cams else cfg.sysu_ir_per_cam
            for k in range(n):
                p = root / f"cam{c}" / f"{int(pid):04d}" / f"{k + 1:04d}.jpg"
                jobs.append(_Job(str(p), "sysu", int(pid), c, k))
    meta = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
    return jobs, meta


def _regdb_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], list[tuple[str, int, int]]]:
    """RegDB-synth's images: with ``regdb_sequence`` each person's images are the frames of
    one walk past the dual camera, as RegDB was captured: one view (towards the camera,
    ``front``, or away from it, ``back``, as the file name says), the walking phase
    advancing frame by frame; otherwise views are drawn per image (the earlier generator)."""
    jobs: list[_Job] = []
    entries: list[tuple[str, int, int]] = []  # (relative path, pid, cam)
    serial = 0
    for pid in range(1, cfg.regdb_ids + 1):
        gender = "female" if np.random.default_rng([seed, 201, pid]).random() < 0.4 else "male"
        walk = np.random.default_rng([seed, 203, pid])
        walk_view = "front" if walk.random() < 0.5 else "back"
        phase0, step = walk.uniform(0, 2 * math.pi), walk.uniform(0.5, 0.9)
        for cam, mod, tag, folder in ((1, "v", "v", "Visible"), (2, "t", "t", "Thermal")):
            for k in range(cfg.regdb_per_modality):
                serial += 1
                if cfg.regdb_sequence:
                    view, phase = walk_view, phase0 + k * step
                else:
                    view, phase = ("front" if k % 2 == 0 else "back"), None
                rel = f"{folder}/{pid}/{gender}_{view}_{tag}_{serial:05d}_{pid}.bmp"
                # a paired thermal image replays its visible twin's draws (pose, view, window)
                jobs.append(
                    _Job(
                        str(root / rel),
                        "regdb",
                        pid,
                        cam,
                        k,
                        fmt="BMP",
                        rng_cam=1 if cfg.regdb_paired else None,
                        view=view if cfg.regdb_sequence else None,
                        phase=phase,
                    )
                )
                entries.append((rel, pid, cam))
    return jobs, entries


def _market_plan(root: Path, seed: int, cfg: SynthConfig) -> list[_Job]:
    rng = np.random.default_rng([seed, 301])
    n = cfg.market_train_ids + cfg.market_test_ids
    pids = np.sort(rng.choice(np.arange(1, 1500), n, replace=False))
    perm = rng.permutation(pids)
    test = set(int(p) for p in perm[: cfg.market_test_ids])
    jobs: list[_Job] = []
    frame = 0
    for pid in pids:
        pid = int(pid)
        r = np.random.default_rng([seed, 302, pid])
        cams = sorted(int(c) for c in r.choice(np.arange(1, 7), int(r.integers(2, 7)), replace=False))
        for ci, c in enumerate(cams):
            for k in range(cfg.market_per_cam + (1 if pid in test else 0)):
                frame += int(r.integers(5, 60))
                seq = int(r.integers(1, 7))
                name = f"{pid:04d}_c{c}s{seq}_{frame:06d}_{k + 1:02d}.jpg"
                if pid in test:
                    folder = "query" if (k == 0 and ci < 2) else "bounding_box_test"
                else:
                    folder = "bounding_box_train"
                jobs.append(_Job(str(root / folder / name), "market", pid, c, k))
    # Distractors (pid 0000) and junk (pid -1) in the gallery, as Market-1501 ships them.
    for k in range(max(2, cfg.market_test_ids // 6)):
        r = np.random.default_rng([seed, 303, k])
        c = int(r.integers(1, 7))
        frame += 7
        pid_d = 1500 + k  # rendered as an unseen person, named as a distractor
        jobs.append(_Job(str(root / "bounding_box_test" / f"0000_c{c}s1_{frame:06d}_00.jpg"), "market", pid_d, c, 0))
        jobs.append(_Job(str(root / "bounding_box_test" / f"-1_c{c}s1_{frame:06d}_00.jpg"), "market", pid_d, c, 1))
    return jobs


# ----------------------------------------------------------------------------- SYSU-MM01 official split
MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by cmamlib.data.synth"
"""Fixed text of the 116-byte MAT-file header (scipy writes the creation time there,
which would make the files differ from run to run)."""


def _mat_bytes(variables: dict) -> bytes:
    """A MATLAB 5 .mat file of ``variables`` (scipy ``savemat``) with a fixed header text."""
    import io

    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables, do_compression=False)
    data = buf.getvalue()
    return MAT_DESCRIPTION.ljust(116, b" ") + data[116:]


def write_sysu_mm01_official(root: str | os.PathLike, seed: int = 0, trials: int = 10) -> dict:
    """Write ``exp/rand_perm_cam.mat`` and ``exp/test_id.mat`` for a SYSU-MM01 tree on disk.

    The structure is the real dataset's, as its authors' evaluation code reads it
    (``scipy.io.loadmat(...)["rand_perm_cam"][cam - 1][0].squeeze()[pid - 1][trial]``):
    ``rand_perm_cam`` is a 6 x 1 cell (cameras 1..6) of N x 1 cells (ids 1..N, N the
    largest id of ``exp/{train,val,test}_id.txt``; 533 in the real file), each a
    ``trials x n`` double matrix whose rows are random permutations of ``1..n`` over the
    ``n`` images of ``camC/PPPP`` in sorted file order, or an empty 0 x 0 matrix where
    the folder does not exist; ``test_id.mat`` holds ``id``, a 1 x T double row of the
    ids of ``exp/test_id.txt``. Each permutation draws from its own generator seeded with
    ``(seed, cam, pid)``, and the header text is fixed, so the bytes depend only on the
    tree and the seed.

    Args:
        root: a SYSU-MM01-layout folder (``cam1..cam6/``, ``exp/*_id.txt``).
        seed: master seed.
        trials: rows of every permutation matrix (10, as the real file).

    Returns:
        ``{"ids": N, "test_ids": T, "trials": trials}``.
    """
    root = Path(root)
    exp = root / "exp"

    def ids_of(name: str) -> list[int]:
        return [int(t) for t in (exp / name).read_text().strip().strip(",").split(",") if t.strip()]

    test_ids = ids_of("test_id.txt")
    n_ids = max(max(ids_of(f)) for f in ("train_id.txt", "val_id.txt", "test_id.txt"))
    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        per_id = np.empty((n_ids, 1), dtype=object)
        for pid in range(1, n_ids + 1):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            n = len([p for p in folder.iterdir() if p.suffix.lower() == ".jpg"]) if folder.is_dir() else 0
            if n == 0:
                per_id[pid - 1, 0] = np.zeros((0, 0))
                continue
            rng = np.random.default_rng([seed, DOMAIN_CODES["sysu"], 555, cam, pid])
            per_id[pid - 1, 0] = np.stack([rng.permutation(n) + 1 for _ in range(trials)]).astype(np.float64)
        cells[cam - 1, 0] = per_id
    (exp / "rand_perm_cam.mat").write_bytes(_mat_bytes({"rand_perm_cam": cells}))
    (exp / "test_id.mat").write_bytes(_mat_bytes({"id": np.asarray([test_ids], dtype=np.float64)}))
    return {"ids": n_ids, "test_ids": len(test_ids), "trials": trials}


# ----------------------------------------------------------------------------- SYSU-MM02 layout
SYSU_MM02_RENDER_CAMS = {1: 1, 2: 3, 3: 6}
"""SYSU-MM02 file camera value -> the SYSU-synth camera that renders it (file cam 1
visible, 2 and 3 near-infrared: the reader's default mapping)."""


def sysu_mm02_sizes(cfg: SynthConfig) -> dict[str, int]:
    """Sizes of SYSU-MM02-synth derived from a preset (tiny: 6 test ids x (4 + 4),
    8 train ids; default: 30 test ids x (5 + 5), 60 train ids x (2 visible + 4 infrared)).
    """
    return {
        "test_ids": max(6, cfg.sysu_test_ids // 2),
        "test_per_modality": cfg.sysu_vis_per_cam + 2,
        "train_ids": max(8, cfg.sysu_test_ids),
        "train_visible_per_id": 2,
        "train_infrared_per_cam": 2,
    }


def _sysu_mm02_plan(root: Path, seed: int, cfg: SynthConfig) -> tuple[list[_Job], dict[str, list[str]]]:
    """Jobs and list lines of SYSU-MM02-synth (layout of the authors' code: ``train/``,
    ``test/``, ``train.txt``, ``test_rgb.txt``, ``test_ir.txt`` with ``path pid cam``).

    Rendered with the SYSU-synth cameras (:data:`SYSU_MM02_RENDER_CAMS`) and identities
    of their own (render ids 2001.. for test, 3001.. for train; SYSU-MM01-synth uses ids
    below 1000). Training file names carry no identity (shuffled serial numbers) and
    their list pid is the placeholder 0, as the real list's training pids mean nothing.
    """
    z = sysu_mm02_sizes(cfg)
    jobs: list[_Job] = []
    lines: dict[str, list[str]] = {"train.txt": [], "test_rgb.txt": [], "test_ir.txt": []}
    for pid in range(1, z["test_ids"] + 1):
        rpid = 2000 + pid
        for k in range(z["test_per_modality"]):
            rel = f"test/rgb/{pid:04d}_c1_{k + 1:03d}.jpg"
            jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[1], k))
            lines["test_rgb.txt"].append(f"{rel} {pid} 1")
        for k in range(z["test_per_modality"]):
            c = 2 + k % 2
            rel = f"test/ir/{pid:04d}_c{c}_{k + 1:03d}.jpg"
            jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[c], k))
            lines["test_ir.txt"].append(f"{rel} {pid} {c}")
    train: list[tuple[int, int, int]] = []  # (render pid, file cam, index)
    for j in range(1, z["train_ids"] + 1):
        train += [(3000 + j, 1, k) for k in range(z["train_visible_per_id"])]
        train += [(3000 + j, c, k) for c in (2, 3) for k in range(z["train_infrared_per_cam"])]
    order = np.random.default_rng([seed, DOMAIN_CODES["sysu"], 777]).permutation(len(train))
    for serial, i in enumerate(order, start=1):
        rpid, c, k = train[int(i)]
        rel = f"train/{'rgb' if c == 1 else 'ir'}/{serial:06d}.jpg"
        jobs.append(_Job(str(root / rel), "sysu", rpid, SYSU_MM02_RENDER_CAMS[c], k))
    entries = sorted((job.path, c) for job, (_, c, _) in zip(jobs[-len(train) :], (train[int(i)] for i in order)))
    lines["train.txt"] = [f"{Path(p).relative_to(root).as_posix()} 0 {c}" for p, c in entries]
    return jobs, lines


def _count_sysu_mm02(lines: dict[str, list[str]]) -> dict:
    train = [ln.split() for ln in lines["train.txt"]]
    return {
        "train": {"visible": sum(f[2] == "1" for f in train), "infrared": sum(f[2] != "1" for f in train)},
        "test": {
            "ids": len({ln.split()[1] for ln in lines["test_rgb.txt"]}),
            "visible": len(lines["test_rgb.txt"]),
            "infrared": len(lines["test_ir.txt"]),
        },
    }


def generate(
    out: str | os.PathLike,
    preset: str | SynthConfig = "default",
    seed: int = 0,
    workers: int | None = None,
    datasets: Sequence[str] = ("sysu", "regdb", "market", "sysumm02"),
    progress: bool = True,
) -> dict:
    """Write the synthetic benchmark under ``out`` and return a summary dict.

    Args:
        out: output folder; ``SYSU-MM01-synth/`` (with the official-protocol files
            ``exp/rand_perm_cam.mat`` and ``exp/test_id.mat``), ``RegDB-synth/``,
            ``Market-1501-synth/`` and ``SYSU-MM02-synth/`` are (re)written inside it.
        preset: ``"tiny"`` (tests, seconds), ``"small"`` or ``"default"``, or a
            :class:`SynthConfig`.
        seed: master seed; the same seed gives byte-identical files.
        workers: processes used to render (default: all cores); does not change output.
        datasets: subset of ``("sysu", "regdb", "market", "sysumm02")`` to write.
        progress: show a tqdm progress bar.

    Returns:
        ``{"preset", "seed", "counts": {...}, "seconds"}``; also written to
        ``out/synth_manifest.json``.
    """
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    unknown = set(datasets) - set(DOMAIN_CODES) - {"sysumm02"}
    if unknown:
        raise ValueError(
            f"unknown datasets {sorted(unknown)}; expected a subset of {sorted(DOMAIN_CODES) + ['sysumm02']}"
        )
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    counts: dict = {}
    if "sysu" in datasets:
        root = out / "SYSU-MM01-synth"
        _clean(root)
        sj, meta = _sysu_plan(root, seed, cfg)
        jobs += sj
        (root / "exp").mkdir(parents=True, exist_ok=True)
        for split in ("train", "val", "test"):
            (root / "exp" / f"{split}_id.txt").write_text(",".join(str(p) for p in meta[split]) + "\n")
        counts["SYSU-MM01-synth"] = _count_sysu(sj, meta)
    if "regdb" in datasets:
        root = out / "RegDB-synth"
        _clean(root)
        rj, entries = _regdb_plan(root, seed, cfg)
        jobs += rj
        _write_regdb_idx(root, entries, seed, cfg)
        counts["RegDB-synth"] = {
            "ids": cfg.regdb_ids,
            "visible": cfg.regdb_ids * cfg.regdb_per_modality,
            "thermal": cfg.regdb_ids * cfg.regdb_per_modality,
            "splits": 10,
        }
    if "market" in datasets:
        root = out / "Market-1501-synth"
        _clean(root)
        mj = _market_plan(root, seed, cfg)
        jobs += mj
        counts["Market-1501-synth"] = _count_market(mj)
    if "sysumm02" in datasets:  # SYSU-MM02 layout, rendered by the SYSU-synth cameras
        root = out / "SYSU-MM02-synth"
        _clean(root)
        sj2, lines = _sysu_mm02_plan(root, seed, cfg)
        jobs += sj2
        root.mkdir(parents=True, exist_ok=True)
        for name, ls in lines.items():
            (root / name).write_text("\n".join(ls) + "\n")
        counts["SYSU-MM02-synth"] = _count_sysu_mm02(lines)
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + 64] for i in range(0, len(jobs), 64)]
    bar = _tqdm(total=len(jobs), desc="rendering", disable=not progress)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as ex:
            for n in ex.map(_render_jobs, [(seed, cfg, c) for c in chunks]):
                bar.update(n)
    else:
        for c in chunks:
            bar.update(_render_jobs((seed, cfg, c)))
    bar.close()
    if "sysu" in datasets:  # the official-protocol files need the rendered tree
        write_sysu_mm01_official(out / "SYSU-MM01-synth", seed)
    summary = {
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": seed,
        "config": asdict(cfg),
        "counts": counts,
        "images": len(jobs),
        "seconds": round(time.time() - t0, 2),
    }
    # The manifest's timing varies between runs; it sits beside the trees, not inside them.
    (out / "synth_manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _tqdm(**kw):
    from tqdm.auto import tqdm

    return tqdm(**kw)


def _clean(root: Path) -> None:
    """Remove a previously generated tree (only files this generator writes)."""
    if not root.exists():
        return
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and p.suffix.lower() in (".jpg", ".bmp", ".txt", ".mat"):
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def _count_sysu(jobs: list[_Job], meta: dict) -> dict:
    split_of = {p: s for s in ("train", "val", "test") for p in meta[s]}
    c: dict = {}
    for s in ("train", "val", "test"):
        js = [j for j in jobs if split_of[j.pid] == s]
        c[s] = {
            "ids": len(meta[s]),
            "visible": sum(j.cam not in (3, 6) for j in js),
            "infrared": sum(j.cam in (3, 6) for j in js),
        }
    return c


def _count_market(jobs: list[_Job]) -> dict:
    c: dict = {}
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        js = [j for j in jobs if Path(j.path).parent.name == folder]
        names = [Path(j.path).name.split("_")[0] for j in js]
        c[folder] = {"images": len(js), "ids": len({n for n in names if n not in ("0000", "-1")})}
    return c


def _write_regdb_idx(root: Path, entries: list[tuple[str, int, int]], seed: int, cfg: SynthConfig) -> None:
    """10 random half/half identity splits, RegDB's ``idx/`` list files."""
    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    pids = np.arange(1, cfg.regdb_ids + 1)
    for trial in range(1, 11):
        rng = np.random.default_rng([seed, 202, trial])
        perm = rng.permutation(pids)
        half = cfg.regdb_ids // 2
        split_ids = {"train": set(perm[:half].tolist()), "test": set(perm[half:].tolist())}
        for split, ids in split_ids.items():
            for cam, name in ((1, "visible"), (2, "thermal")):
                lines = [f"{rel} {pid - 1}" for rel, pid, c in entries if c == cam and pid in ids]
                (idx / f"{split}_{name}_{trial}.txt").write_text("\n".join(lines) + "\n")


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the synthetic visible-infrared Re-ID benchmark.")
    ap.add_argument("--out", required=True, help="output folder (e.g. data)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--datasets", default="sysu,regdb,market,sysumm02", help="comma-separated subset of sysu,regdb,market,sysumm02"
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    s = generate(args.out, args.preset, args.seed, args.workers, tuple(args.datasets.split(",")))
    print(json.dumps({k: s[k] for k in ("preset", "seed", "images", "seconds", "counts")}, indent=2))


if __name__ == "__main__":
    main()
