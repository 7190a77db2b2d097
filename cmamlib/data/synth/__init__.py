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

Layout: :mod:`.config` (materials, :class:`SynthConfig`, presets), :mod:`.people`
(identities, thermal emission), :mod:`.cameras`, :mod:`.render` (drawing and the
three modalities' pixels) and :mod:`.writers` (the dataset layouts, :func:`generate`,
the command line); every name is importable from ``cmamlib.data.synth``.
"""

from .cameras import (  # noqa: F401
    Camera,
    _make_scene,
    make_cameras,
)
from .config import (  # noqa: F401
    BAG,
    BAGS,
    BG,
    CANVAS_H,
    CANVAS_W,
    DOMAIN_CODES,
    HAIR,
    HAIR_STYLES,
    HAT,
    INNER,
    LOWER,
    LOWER2,
    LOWER_CUTS,
    N_MAT,
    PRESETS,
    SHOES,
    SKIN,
    UPPER,
    UPPER2,
    UPPER_CUTS,
    UPPER_PATTERNS,
    VIEWS,
    SynthConfig,
)
from .people import (  # noqa: F401
    LOWER_INSULATION,
    UPPER_INSULATION,
    Identity,
    _hsv_to_rgb,
    _rand_color,
    luma,
    make_identity,
    thermal_emission,
)
from .render import (  # noqa: F401
    _XX,
    _YY,
    THERMAL_EXTRA_BLUR,
    _Draw,
    _draw_person,
    _thermal_pixels,
    render_image,
)
from .writers import (  # noqa: F401
    MAT_DESCRIPTION,
    SYSU_MM02_RENDER_CAMS,
    _clean,
    _count_market,
    _count_sysu,
    _count_sysu_mm02,
    _Job,
    _market_plan,
    _mat_bytes,
    _regdb_plan,
    _render_jobs,
    _sysu_mm02_plan,
    _sysu_plan,
    _tqdm,
    _write_regdb_idx,
    generate,
    job_rng,
    main,
    sysu_mm02_sizes,
    write_sysu_mm01_official,
)
