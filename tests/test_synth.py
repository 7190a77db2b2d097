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
    digest = _digest(out)
    assert digest == _digest(again)
    # every tree is covered, the official-protocol .mat files and SYSU-MM02 included
    for name in (
        "SYSU-MM01-synth/exp/rand_perm_cam.mat",
        "SYSU-MM01-synth/exp/test_id.mat",
        "SYSU-MM02-synth/train.txt",
        "SYSU-MM02-synth/test_ir.txt",
    ):
        assert name in digest
    assert any(k.startswith("SYSU-MM02-synth/train/") for k in digest)
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


def test_sysu_official_mat_files_as_peer_code_reads_them(tiny):
    """The authors' Python evaluation: loadmat(...)["rand_perm_cam"][cam - 1][0].squeeze()
    indexed by pid - 1, row = trial, 1-based indices into the sorted file list."""
    from scipy.io import loadmat

    out, _ = tiny
    root = out / "SYSU-MM01-synth"
    ids, files = _independent_sysu_parse(root)
    perms = loadmat(root / "exp" / "rand_perm_cam.mat")["rand_perm_cam"]
    assert perms.shape == (6, 1)
    test_ids = loadmat(root / "exp" / "test_id.mat")["id"].squeeze()
    assert [int(i) for i in test_ids] == [int(p) for p in ids["test"]]
    max_id = max(int(p) for p in sum(ids.values(), []))
    seen_rows = set()
    for cam in range(1, 7):
        per_id = perms[cam - 1][0].squeeze()
        assert len(per_id) == max_id
        for pid in range(1, max_id + 1):
            p = per_id[pid - 1]
            n = len(files.get((cam, "%04d" % pid), []))
            if n == 0:
                assert p.size == 0
                continue
            assert p.shape == (10, n)
            for row in p:
                assert sorted(int(v) for v in row) == list(range(1, n + 1))
                seen_rows.add(tuple(int(v) for v in row))
    assert len(seen_rows) > 1  # not the identity everywhere


def test_sysu_mm02_layout_independent_parser(tiny):
    """The authors' SYSU-MM02 reader: three lists 'path pid cam' at the root, paths
    relative to it; test_rgb = query (file cam 1), test_ir = gallery (file cams 2, 3)."""
    out, summary = tiny
    root = out / "SYSU-MM02-synth"
    lists = {}
    for name in ("train.txt", "test_rgb.txt", "test_ir.txt"):
        rows = [ln.split(" ") for ln in (root / name).read_text().split("\n") if ln]
        assert rows and all(len(r) == 3 for r in rows)
        assert all((root / r[0]).is_file() for r in rows)
        lists[name] = rows
    assert {r[2] for r in lists["test_rgb.txt"]} == {"1"}
    assert {r[2] for r in lists["test_ir.txt"]} == {"2", "3"}
    assert {r[1] for r in lists["test_rgb.txt"]} == {r[1] for r in lists["test_ir.txt"]}
    assert {r[1] for r in lists["train.txt"]} == {"0"}  # placeholder pids, as the real list
    assert {r[2] for r in lists["train.txt"]} == {"1", "2", "3"}
    assert all(re.fullmatch(r"train/(rgb|ir)/\d{6}\.jpg", r[0]) for r in lists["train.txt"])
    a = np.asarray(Image.open(root / lists["test_ir.txt"][0][0]).convert("RGB")).astype(int)
    assert np.abs(a[..., 0] - a[..., 2]).max() <= 2  # infrared stored gray
    a = np.asarray(Image.open(root / lists["test_rgb.txt"][0][0]).convert("RGB")).astype(int)
    assert np.abs(a[..., 0] - a[..., 2]).max() > 10
    c = summary["counts"]["SYSU-MM02-synth"]
    assert c["test"] == {"ids": 6, "visible": len(lists["test_rgb.txt"]), "infrared": len(lists["test_ir.txt"])}
    assert c["train"]["visible"] + c["train"]["infrared"] == len(lists["train.txt"])


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


def test_regdb_thermal_twin_replays_the_visible_pose(tiny):
    """RegDB-synth mimics a dual camera: the k-th thermal image of a person is rendered
    from its visible twin's draws (same view, pose, scale and background window)."""
    from cmamlib.data.synth import _regdb_plan, make_cameras, make_identity, render_image

    out, summary = tiny
    cfg = PRESETS["tiny"]
    cams = make_cameras(3, "regdb", cfg)
    assert np.array_equal(cams[1].view_p, cams[2].view_p) and cams[1].scale == cams[2].scale
    pid = 1
    thermal = sorted(
        (out / "RegDB-synth" / "Thermal" / str(pid)).iterdir(), key=lambda p: int(p.name.split("_")[3])
    )  # by serial = k
    ident = make_identity(3, "regdb", pid, cfg)
    job = next(j for j in _regdb_plan(out / "RegDB-synth", 3, cfg)[0] if j.pid == pid and j.cam == 2 and j.index == 0)
    rng = np.random.default_rng([3, 2, pid, 1, 0])  # the visible twin's stream
    twin = render_image(ident, cams[2], rng, cfg, view=job.view, phase=job.phase)
    buf = out / "twin.bmp"
    twin.save(buf, "BMP")
    assert buf.read_bytes() == thermal[0].read_bytes()
    buf.unlink()


def test_cmamlib_readers_accept_the_trees(tiny):
    from cmamlib.data import read_market1501, read_regdb, read_sysu_mm01, sysu_query_gallery

    out, summary = tiny
    tr = read_sysu_mm01(out / "SYSU-MM01-synth", "train", verify=True)
    te = read_sysu_mm01(out / "SYSU-MM01-synth", "test")
    q, g = sysu_query_gallery(te)
    assert {r.modality for r in q} == {"infrared"} and {r.modality for r in g} == {"visible"}
    c = summary["counts"]["SYSU-MM01-synth"]
    assert len(tr) == sum(c[s]["visible"] + c[s]["infrared"] for s in ("train", "val"))
    assert (
        len(read_market1501(out / "Market-1501-synth", "train"))
        == summary["counts"]["Market-1501-synth"]["bounding_box_train"]["images"]
    )
    assert len(read_regdb(out / "RegDB-synth", 1, "test")) > 0


def test_bad_preset_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        generate("/tmp/never", "huge")


def test_infrared_reflectance_correlated_with_luminance_but_not_a_function_of_it():
    """The issue's physics: per-material NIR follows visible luminance (strong
    correlation) yet some materials are clearly brighter, some clearly darker, than their
    gray value; skin is bright in NIR whatever its visible tone."""
    from cmamlib.data.synth import (
        BAG,
        HAT,
        INNER,
        LOWER,
        LOWER2,
        SHOES,
        SKIN,
        UPPER,
        UPPER2,
        SynthConfig,
        luma,
        make_identity,
    )

    cfg = SynthConfig()
    mats = [UPPER, UPPER2, INNER, LOWER, LOWER2, SHOES, BAG, HAT]
    lum, nir, skin_vis, skin_nir = [], [], [], []
    for pid in range(300):
        ident = make_identity(0, "sysu", pid, cfg)
        lum.append(luma(ident.vis)[mats])
        nir.append(ident.nir[mats])
        skin_vis.append(luma(ident.vis)[SKIN])
        skin_nir.append(ident.nir[SKIN])
    lum, nir = np.concatenate(lum), np.concatenate(nir)
    assert np.corrcoef(lum, nir)[0, 1] > 0.8
    resid = nir - lum
    assert (resid > 0.05).mean() > 0.05 and (resid < -0.05).mean() > 0.05  # some brighter, some darker
    # identical luminance does not give identical NIR: not a function of it
    order = np.argsort(lum)
    close = np.abs(np.diff(lum[order])) < 0.01
    assert np.abs(np.diff(nir[order]))[close].mean() > 0.02
    assert np.std(skin_nir) < 0.5 * np.std(skin_vis) and np.mean(skin_nir) > 0.6


def test_thermal_luma_weight_sets_the_sign_of_the_clothing_correlation_and_draws_nothing_else():
    """With the legacy thermal model, ``thermal_luma_weight`` (a diagnostic knob of
    ``investigations/probe_regdb.py``) makes a clothing material's thermal emission follow its
    visible luminance with that sign;
    every other attribute of the identity (same random draws) is unchanged."""
    from dataclasses import replace

    from cmamlib.data.synth import (
        BAG,
        HAT,
        INNER,
        LOWER,
        LOWER2,
        SHOES,
        UPPER,
        UPPER2,
        SynthConfig,
        luma,
        make_identity,
    )

    mats = [UPPER, UPPER2, INNER, LOWER, LOWER2, HAT]  # bag and shoes have their own thermal ranges
    base = SynthConfig(thermal_model="legacy")
    refs = [make_identity(0, "regdb", pid, base) for pid in range(200)]
    corr = {}
    for w in (-0.8, 0.1, 0.8):
        cfg = replace(base, thermal_luma_weight=w, thermal_random=0.1)
        lum, th = [], []
        for pid, ref in enumerate(refs):
            ident = make_identity(0, "regdb", pid, cfg)
            assert (
                np.array_equal(ident.vis, ref.vis)
                and np.array_equal(ident.nir, ref.nir)
                and ident.upper_cut == ref.upper_cut
            )
            assert np.array_equal(ident.thermal[[BAG, SHOES]], ref.thermal[[BAG, SHOES]])
            lum.append(luma(ident.vis)[mats])
            th.append(ident.thermal[mats])
        corr[w] = np.corrcoef(np.concatenate(lum), np.concatenate(th))[0, 1]
    assert corr[-0.8] < -0.9 and corr[0.8] > 0.9 and abs(corr[0.1]) < corr[0.8]


def _regdb_twins(cfg, seed: int = 0, ids: int = 12):
    """(visible image, thermal image, visible material map) of every paired frame of the
    first ``ids`` RegDB-synth identities, rendered as :func:`generate` renders them."""
    from cmamlib.data.synth import _regdb_plan, job_rng, make_cameras, make_identity, render_image

    cams = make_cameras(seed, "regdb", cfg)
    jobs = [j for j in _regdb_plan(Path("/nonexistent"), seed, cfg)[0] if j.pid <= ids]
    out = []
    for v in (j for j in jobs if j.cam == 1):
        t = next(j for j in jobs if j.cam == 2 and j.pid == v.pid and j.index == v.index)
        ident = make_identity(seed, "regdb", v.pid, cfg)
        ims = []
        for j in (v, t):
            ims.append(
                render_image(
                    ident, cams[j.cam], job_rng(seed, j), cfg, view=j.view, phase=j.phase, return_materials=True
                )
            )
        out.append(
            (np.asarray(ims[0][0], np.float32) / 255, np.asarray(ims[1][0], np.float32)[..., 0] / 255, ims[0][1])
        )
    return out


def test_thermal_clothing_is_unrelated_to_visible_luminance():
    """Emission physics (tiny preset): over clothing pixels, a thermal frame's intensity is
    nearly uncorrelated with its visible twin's luminance, while skin is the hottest
    material and the person is warmer than the background."""
    from cmamlib.data.synth import BG, LOWER, SKIN, UPPER, luma

    twins = _regdb_twins(PRESETS["tiny"])
    lum, th, skin, cloth, bg = [], [], [], [], []
    for vis, ther, mat in twins:
        garment = np.isin(mat, [UPPER, LOWER])
        lum.append(luma(vis)[garment])
        th.append(ther[garment])
        skin.append(ther[mat == SKIN].mean())
        cloth.append(ther[garment].mean())
        bg.append(ther[mat == BG].mean())
    r = np.corrcoef(np.concatenate(lum), np.concatenate(th))[0, 1]
    assert abs(r) < 0.25, r
    assert np.mean(np.array(skin) > np.array(cloth)) > 0.9
    assert np.mean(np.array(cloth) > np.array(bg)) > 0.9


def test_thermal_silhouette_matches_the_visible_one():
    """The thermal twin shows the visible frame's person (same geometry and pose): the
    person mask read off the thermal frame (pixels warmer than the frame's background
    level) overlaps the visible frame's drawn person mask with IoU >= 0.7."""
    from cmamlib.data.synth import BG

    ious = []
    for _, ther, mat in _regdb_twins(PRESETS["tiny"]):
        fg = mat != BG
        level = np.percentile(ther[~fg], 95)  # warmest background pixels
        hot = ther > level
        ious.append((hot & fg).sum() / (hot | fg).sum())
    assert np.median(ious) >= 0.7, np.median(ious)


def test_regdb_frames_of_a_person_are_one_walk():
    """RegDB-synth's images of a person are frames of one walk: one view, named in the file
    name (``front`` / ``back``), the walking phase advancing frame by frame."""
    from cmamlib.data.synth import _regdb_plan

    jobs = _regdb_plan(Path("/x"), 0, PRESETS["tiny"])[0]
    for pid in (1, 2, 3):
        js = [j for j in jobs if j.pid == pid and j.cam == 1]
        assert len({j.view for j in js}) == 1 and all(f"_{j.view}_" in Path(j.path).name for j in js)
        assert np.all(np.diff([j.phase for j in js]) > 0)
