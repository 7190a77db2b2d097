"""Intensity statistics of image views on constructed images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cmamlib.analysis import intensity_statistics
from cmamlib.data import Record


def _images(tmp_path, name, colour, n=4):
    recs = []
    for i in range(n):
        p = tmp_path / f"{name}_{i}.png"
        Image.fromarray(np.full((8, 4, 3), colour, dtype=np.uint8)).save(p)
        recs.append(Record(str(p), i, 1, "visible"))
    return recs


def test_intensity_statistics_known_values(tmp_path):
    red = _images(tmp_path, "red", (200, 0, 0))
    gray = _images(tmp_path, "gray", (60, 60, 60))
    st = intensity_statistics({"red luma": (red, "luma"), "gray": (gray, "luma")}, reference="gray", max_images=10)
    luma = 0.299 * 200
    assert st["red luma"]["mean"] == pytest.approx(luma, abs=0.5)
    assert st["red luma"]["std"] == pytest.approx(0, abs=1e-3)
    assert st["gray"]["mean"] == pytest.approx(60, abs=0.5)
    assert st["gray"]["wasserstein_to_reference"] == 0.0
    assert st["red luma"]["wasserstein_to_reference"] == pytest.approx(round(luma) - 60, abs=1.0)
    # random channel of a pure red image: R (200) or G/B (0), per image
    rc = intensity_statistics({"rc": (red * 5, "random_channel")}, max_images=20, seed=1)["rc"]
    assert set(np.unique(rc["sample"]).tolist()) <= {0, 200}


def test_intensity_statistics_errors(tmp_path):
    gray = _images(tmp_path, "g", (10, 10, 10), n=1)
    with pytest.raises(ValueError, match="no images"):
        intensity_statistics({"empty": ([], "luma")})
    with pytest.raises(ValueError, match="reference"):
        intensity_statistics({"g": (gray, "luma")}, reference="missing")
