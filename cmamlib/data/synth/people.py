"""Synthetic identities: their persistent shape, colours, near-infrared reflectance and thermal emission."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import (
    BAG,
    BAGS,
    DOMAIN_CODES,
    HAIR,
    HAIR_STYLES,
    HAT,
    INNER,
    LOWER,
    LOWER2,
    LOWER_CUTS,
    N_MAT,
    SHOES,
    SKIN,
    UPPER,
    UPPER2,
    UPPER_CUTS,
    UPPER_PATTERNS,
    SynthConfig,
)


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
