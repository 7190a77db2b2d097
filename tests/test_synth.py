"""The synthetic benchmark: determinism and layouts checked by an independent parser."""

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmamlib.data.synth import PRESETS, generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate(out, "tiny", seed=3, workers=2, progress=False)
    return out, summary


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synth_manifest.json"
    }


def test_same_seed_byte_identical_whatever_the_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate(again, "tiny", seed=3, workers=1, progress=False)
    assert _digest(out) == _digest(again)
    other = tmp_path / "other"
    generate(other, "tiny", seed=4, workers=1, progress=False, datasets=("sysu",))
    a = _digest(out / "SYSU-MM01-synth")
    b = _digest(other / "SYSU-MM01-synth")
    assert a != b


def _independent_sysu_parse(root: Path):
    """Parse SYSU-MM01 the way the Cross-Modal-Re-ID-baseline code does (independently
    of cmamlib.data.readers): id files, then cam folders of 4-digit ids."""
    ids = {}
    for split in ("train", "val", "test"):
        line = (root / "exp" / f"{split}_id.txt").read_text().strip()
        ids[split] = ["%04d" % int(y) for y in line.split(",")]
    files = {}
    for cam in range(1, 7):
        for pid in sum(ids.values(), []):
            d = root / f"cam{cam}" / pid
            if d.is_dir():
                files[(cam, pid)] = sorted(str(d / f) for f in os.listdir(d))
    return ids, files


def test_sysu_layout_independent_parser(tiny):
    out, summary = tiny
    root = out / "SYSU-MM01-synth"
    ids, files = _independent_sysu_parse(root)
    tr, va, te = set(ids["train"]), set(ids["val"]), set(ids["test"])
    assert not (tr & va) and not (tr & te) and not (va & te)  # disjoint id files
    assert len(tr | va | te) == PRESETS["tiny"].sysu_ids
    for pid in te:  # every test id has infrared and visible images
        assert any((c, pid) in files for c in (3, 6))
        assert any((c, pid) in files for c in (1, 2, 4, 5))
    for (cam, pid), fs in files.items():
        assert all(re.fullmatch(r"\d{4}\.jpg", Path(f).name) for f in fs)
        if cam in (3, 6):  # infrared stored gray
            for f in fs[:2]:
                a = np.asarray(Image.open(f).convert("RGB")).astype(int)
                assert np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2
        else:
            a = np.asarray(Image.open(fs[0]).convert("RGB")).astype(int)
            assert np.abs(a[..., 0] - a[..., 2]).max() > 10  # colour
    # query (IR of test ids) ids are a subset of the gallery (visible of test ids) ids
    q = {pid for (c, pid) in files if c in (3, 6) and pid in te}
    g = {pid for (c, pid) in files if c in (1, 2, 4, 5) and pid in te}
    assert q <= g
    counts = summary["counts"]["SYSU-MM01-synth"]
    n_files = sum(len(v) for v in files.values())
    assert n_files == sum(counts[s]["visible"] + counts[s]["infrared"] for s in ("train", "val", "test"))


def test_market_layout_independent_parser(tiny):
    out, _ = tiny
    root = out / "Market-1501-synth"
    pat = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
    ids = {}
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = os.listdir(root / folder)
        assert names
        for n in names:
            m = pat.match(n)
            assert m, n
            assert 1 <= int(m.group(2)) <= 6
        ids[folder] = {int(pat.match(n).group(1)) for n in names}
    assert not (ids["bounding_box_train"] & (ids["query"] | ids["bounding_box_test"]))
    assert ids["query"] <= ids["bounding_box_test"]
    assert {0, -1} <= ids["bounding_box_test"]  # distractors and junk, as Market-1501


def test_regdb_layout(tiny):
    out, _ = tiny
    root = out / "RegDB-synth"
    for i in range(1, 11):
        for split in ("train", "test"):
            v = (root / "idx" / f"{split}_visible_{i}.txt").read_text().split("\n")
            t = (root / "idx" / f"{split}_thermal_{i}.txt").read_text().split("\n")
            v = [x.split() for x in v if x]
            t = [x.split() for x in t if x]
            assert {x[1] for x in v} == {x[1] for x in t}
            assert all((root / x[0]).exists() and x[0].startswith("Visible/") for x in v)
            assert all(x[0].startswith("Thermal/") for x in t)
        tr = {x.split()[1] for x in (root / "idx" / f"train_visible_{i}.txt").read_text().split("\n") if x}
        te = {x.split()[1] for x in (root / "idx" / f"test_visible_{i}.txt").read_text().split("\n") if x}
        assert not (tr & te)


def test_cmamlib_readers_accept_the_trees(tiny):
    from cmamlib.data import read_market1501, read_regdb, read_sysu_mm01, sysu_query_gallery

    out, summary = tiny
    tr = read_sysu_mm01(out / "SYSU-MM01-synth", "train", verify=True)
    te = read_sysu_mm01(out / "SYSU-MM01-synth", "test")
    q, g = sysu_query_gallery(te)
    assert {r.modality for r in q} == {"infrared"} and {r.modality for r in g} == {"visible"}
    c = summary["counts"]["SYSU-MM01-synth"]
    assert len(tr) == sum(c[s]["visible"] + c[s]["infrared"] for s in ("train", "val"))
    assert len(read_market1501(out / "Market-1501-synth", "train")) == summary["counts"]["Market-1501-synth"]["bounding_box_train"]["images"]
    assert len(read_regdb(out / "RegDB-synth", 1, "test")) > 0


def test_bad_preset_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        generate("/tmp/never", "huge")
