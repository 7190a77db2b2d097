"""Drawing a person's material map and rendering it as a visible, near-infrared or thermal image."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .cameras import Camera
from .config import (
    BAG,
    BG,
    CANVAS_H,
    CANVAS_W,
    HAIR,
    HAT,
    INNER,
    LOWER,
    LOWER2,
    SHOES,
    SKIN,
    UPPER,
    UPPER2,
    VIEWS,
    SynthConfig,
)
from .people import Identity

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
