"""The synthetic benchmark's materials, garment vocabularies, :class:`SynthConfig` and its presets."""

from __future__ import annotations

from dataclasses import dataclass

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
