"""The cameras of each synthetic dataset: modality, viewpoint mix, scene, light, blur, noise, size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .config import DOMAIN_CODES, SynthConfig


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
