"""Dataset readers on tiny fake trees (real 8x4 JPEG/BMP files) in each published layout."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmamlib.data.readers import (
    DATASET_SPLITS,
    READERS,
    UNKNOWN_PID,
    detect_layout,
    read_dataset,
    read_list,
    read_llcm,
    read_market1501,
    read_msmt17,
    read_regdb,
    read_sysu_mm01,
    read_sysu_mm02,
    relabel,
    summarize,
    sysu_mm01_split_ids,
    sysu_query_gallery,
    verify_images,
)
from cmamlib.data.records import INFRARED, VISIBLE, DatasetError, Record


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 30, 60)).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image_bytes("JPEG")
BMP = _image_bytes("BMP")


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BMP if path.suffix == ".bmp" else JPEG)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- fake trees

# SYSU-MM01: {pid: {cam: n_images}}; train ids 1, 2 (+ val 3), test ids 4, 5.
SYSU_TREE = {
    1: {1: 2, 3: 1},
    2: {2: 1, 6: 1},
    3: {4: 1, 3: 1},
    4: {1: 2, 2: 1, 3: 1, 6: 2},
    5: {4: 1, 5: 1, 3: 1},
}


def make_sysu_mm01(root: Path) -> Path:
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for pid, cams in SYSU_TREE.items():
        for cam, n in cams.items():
            for k in range(n):
                _img(root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg")
    _write(root / "exp" / "train_id.txt", "1,2\n")
    _write(root / "exp" / "val_id.txt", "3")
    _write(root / "exp" / "test_id.txt", "5,4\n")
    return root


def make_regdb(root: Path) -> Path:
    for folder, kind, tag in (("Visible", "visible", "v"), ("Thermal", "thermal", "t")):
        for split, pids in (("train", (1, 2)), ("test", (3, 4))):
            lines = []
            for pid in pids:
                for k in range(2):
                    rel = f"{folder}/{pid}/female_{tag}_{pid:05d}_{k}.bmp"
                    _img(root / rel)
                    lines.append(f"{rel} {pid - 1}")
            _write(root / "idx" / f"{split}_{kind}_1.txt", "\n".join(lines) + "\n")
    return root


def make_llcm(root: Path) -> Path:
    for folder, suffix in (("vis", "vis"), ("nir", "nir")):
        for split, pids in (("train", (1, 2)), ("test", (3,))):
            lines = []
            for pid in pids:
                for cam in (1, 6) if suffix == "nir" else (2, 9):
                    rel = f"{folder}/{pid:04d}/{pid:04d}_c{cam:02d}_s200656_f4830_{suffix}.jpg"
                    _img(root / rel)
                    lines.append(f"{rel} {pid}")
            _write(root / "idx" / f"{split}_{suffix}.txt", "\n".join(lines) + "\n")
    return root


def make_market(root: Path) -> Path:
    files = {
        "bounding_box_train": [
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000551_01.jpg",
            "0007_c3s2_001051_02.jpg",
            "-1_c1s1_000401_03.jpg",
        ],
        "query": ["0002_c1s1_000451_04.jpg", "0003_c6s1_000001_00.jpg"],
        "bounding_box_test": [
            "0000_c1s1_000001_00.jpg",
            "-1_c2s1_000002_00.jpg",
            "0002_c2s1_000003_00.jpg",
            "0003_c5s3_000004_01.jpg",
        ],
    }
    for folder, names in files.items():
        for name in names:
            _img(root / folder / name)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\x00thumbs")
    (root / "bounding_box_test" / ".DS_Store").write_bytes(b"\x00")
    return root


def make_msmt17(root: Path) -> Path:
    spec = {
        "train": ("train", [(0, 1), (0, 2), (1, 15)]),
        "val": ("train", [(2, 3)]),
        "query": ("test", [(0, 4)]),
        "gallery": ("test", [(0, 5), (1, 7)]),
    }
    for split, (base, items) in spec.items():
        lines = []
        for k, (pid, cam) in enumerate(items):
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303morning_0015_0.jpg"
            _img(root / base / rel)
            lines.append(f"{rel} {pid}")
        _write(root / f"list_{split}.txt", "\n".join(lines) + "\n")
    return root


def make_sysu_mm02(root: Path) -> Path:
    train = []
    for k, cam in enumerate((1, 1, 2, 3, 3)):
        rel = f"train/clip{cam}/{k:05d}.jpg"
        _img(root / rel)
        train.append(f"{rel} {k * 7} {cam}")
    rgb, ir = [], []
    for pid in (1, 2):
        for k in range(2):
            rel = f"test/rgb/{pid:04d}_{k}.jpg"
            _img(root / rel)
            rgb.append(f"{rel} {pid} 1")
            rel = f"test/ir/{pid:04d}_{k}.jpg"
            _img(root / rel)
            ir.append(f"{rel} {pid} {2 + k}")
    _write(root / "train.txt", "\n".join(train) + "\n")
    _write(root / "test_rgb.txt", "\n".join(rgb) + "\n")
    _write(root / "test_ir.txt", "\n".join(ir) + "\n")
    return root


def make_csv(root: Path, sep: str = ",", name: str = "list.csv") -> Path:
    rows = [sep.join(["path", "pid", "camid", "modality", "split"])]
    for k, (pid, cam, mod, split) in enumerate(
        [(1, 1, "visible", "train"), (1, 2, "infrared", "train"), (2, 1, "visible", "test")]
    ):
        rel = f"imgs/{k}.png"
        img = root / rel
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 4)).save(img)
        rows.append(sep.join([rel, str(pid), str(cam), mod, split]))
    return _write(root / name, "\n".join(rows) + "\n")


@pytest.fixture
def sysu(tmp_path: Path) -> Path:
    return make_sysu_mm01(tmp_path / "SYSU-MM01")


# ----------------------------------------------------------------------------- SYSU-MM01


def test_sysu_mm01_train_and_test(sysu: Path) -> None:
    train = read_sysu_mm01(sysu, "train")
    test = read_sysu_mm01(sysu, "test")
    n = {pid: sum(c.values()) for pid, c in SYSU_TREE.items()}
    assert len(train) == n[1] + n[2] + n[3]
    assert len(test) == n[4] + n[5]
    assert {r.pid for r in train} == {1, 2, 3} and {r.pid for r in test} == {4, 5}
    for r in train + test:
        assert os.path.isabs(r.path) and os.path.isfile(r.path)
        assert r.path.split(os.sep)[-3] == f"cam{r.camid}"
        assert int(r.path.split(os.sep)[-2]) == r.pid
        assert r.modality == (INFRARED if r.camid in (3, 6) else VISIBLE)
    assert [r.path for r in test] == sorted(r.path for r in test)
    assert sysu_mm01_split_ids(sysu) == {"train": [1, 2, 3], "test": [4, 5]}
    assert read_dataset("SYSU_MM01", sysu, "test") == test
    assert read_dataset("auto", sysu, "test") == test


def test_sysu_query_gallery(sysu: Path) -> None:
    test = read_sysu_mm01(sysu, "test")
    query, gallery = sysu_query_gallery(test)
    assert query == sysu_query_gallery(sysu)[0]
    assert {(r.pid, r.camid) for r in query} == {(4, 3), (4, 6), (5, 3)}
    assert len(query) == 1 + 2 + 1
    assert all(r.modality == INFRARED for r in query)
    assert {r.camid for r in gallery} == {1, 2, 4, 5} and len(gallery) == 2 + 1 + 1 + 1
    _, indoor = sysu_query_gallery(test, mode="indoor")
    assert {r.camid for r in indoor} == {1, 2} and len(indoor) == 3
    with pytest.raises(ValueError, match="indoor"):
        sysu_query_gallery(test, mode="outdoor")


def test_sysu_missing_folder(sysu: Path) -> None:
    (sysu / "cam6").rename(sysu / "foo")
    with pytest.raises(DatasetError) as e:
        read_sysu_mm01(sysu, "train")
    msg = str(e.value)
    assert str(sysu) in msg and "cam1..cam6" in msg and "cam6/" in msg and "foo/" in msg


def test_sysu_root_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as e:
        read_sysu_mm01(tmp_path / "nope", "train")
    assert str(tmp_path / "nope") in str(e.value)


@pytest.mark.parametrize(
    "content, expect",
    [
        ("", "empty id file"),
        ("  \n\n", "empty id file"),
        ("a,b\n", "line 1: expected comma-separated integers"),
        ("1,2\n3\n", "found 2 non-empty lines"),
        ("1,,2", "comma-separated integers"),
        ("1,1", "listed twice"),
    ],
)
def test_sysu_bad_id_file(sysu: Path, content: str, expect: str) -> None:
    path = _write(sysu / "exp" / "train_id.txt", content)
    with pytest.raises(DatasetError, match=expect) as e:
        read_sysu_mm01(sysu, "train")
    assert str(path) in str(e.value)


def test_sysu_id_file_missing_and_overlap(sysu: Path) -> None:
    (sysu / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError, match="val_id.txt"):
        read_sysu_mm01(sysu, "test")
    _write(sysu / "exp" / "val_id.txt", "3,4")
    with pytest.raises(DatasetError, match=r"disjoint.*\[4\]"):
        read_sysu_mm01(sysu, "train")


def test_sysu_trailing_comma_tolerated(sysu: Path) -> None:
    _write(sysu / "exp" / "test_id.txt", "4, 5,\r\n")
    assert {r.pid for r in read_sysu_mm01(sysu, "test")} == {4, 5}


def test_sysu_id_without_images(sysu: Path) -> None:
    _write(sysu / "exp" / "test_id.txt", "4,5,9")
    with pytest.raises(DatasetError, match=r"ids \[9\].*cam1/0009") as e:
        read_sysu_mm01(sysu, "test")
    assert str(sysu) in str(e.value)


def test_sysu_empty_visible_test_folder(sysu: Path) -> None:
    (sysu / "cam2" / "0005").mkdir()
    with pytest.raises(DatasetError, match="at least one image") as e:
        read_sysu_mm01(sysu, "test")
    assert str(sysu / "cam2" / "0005") in str(e.value)


def test_sysu_non_image_file(sysu: Path) -> None:
    bad = _write(sysu / "cam1" / "0001" / "notes.txt", "hello")
    with pytest.raises(DatasetError, match="non-image file") as e:
        read_sysu_mm01(sysu, "train")
    assert str(bad) in str(e.value)
    bad.unlink()
    (sysu / "cam1" / "0001" / "sub").mkdir()
    with pytest.raises(DatasetError, match="sub-folder"):
        read_sysu_mm01(sysu, "train")


def test_sysu_hidden_files_ignored(sysu: Path) -> None:
    (sysu / "cam1" / "0001" / ".DS_Store").write_bytes(b"\x00")
    (sysu / "cam1" / "0001" / "Thumbs.db").write_bytes(b"\x00")
    assert len(read_sysu_mm01(sysu, "train", verify=True)) == 7


def test_truncated_image_verify(sysu: Path) -> None:
    bad = sysu / "cam3" / "0004" / "0001.jpg"
    bad.write_bytes(JPEG[: len(JPEG) // 2])
    assert len(read_sysu_mm01(sysu, "test")) == 9  # listing does not decode
    with pytest.raises(DatasetError, match="expected decodable image files, 1 of 9 are not") as e:
        read_sysu_mm01(sysu, "test", verify=True)
    assert str(bad) in str(e.value)
    garbage = sysu / "cam1" / "0004" / "0002.jpg"
    garbage.write_bytes(b"not an image at all")
    failures = verify_images(read_sysu_mm01(sysu, "test"), workers=2, progress=False)
    assert [p for p, _ in failures] == sorted([str(bad), str(garbage)])
    assert all(err for _, err in failures)
    assert verify_images(read_sysu_mm01(sysu, "train"), workers=2, progress=False) == []
    missing = verify_images([sysu / "nope.jpg"], workers=1, progress=False)
    assert missing[0][0] == str(sysu / "nope.jpg") and "FileNotFoundError" in missing[0][1]


# ----------------------------------------------------------------------------- RegDB


def test_regdb(tmp_path: Path) -> None:
    root = make_regdb(tmp_path / "RegDB")
    train = read_regdb(root, 1, "train")
    test = read_regdb(root, trial=1, split="test", verify=True)
    assert len(train) == len(test) == 8
    assert {r.pid for r in train} == {0, 1} and {r.pid for r in test} == {2, 3}
    for r in train + test:
        assert (r.modality, r.camid) in {(VISIBLE, 1), (INFRARED, 2)}
        assert (r.modality == VISIBLE) == (os.sep + "Visible" + os.sep in r.path)
        assert os.path.isfile(r.path)
    assert summarize(train)["visible_images"] == summarize(train)["infrared_images"] == 4
    assert read_dataset("RegDB", root, "test", trial=1) == test
    with pytest.raises(ValueError, match="trial"):
        read_dataset("regdb", root, "test")
    with pytest.raises(ValueError, match="trial"):
        read_regdb(root, 11, "train")
    with pytest.raises(DatasetError, match="train_visible_2.txt"):
        read_regdb(root, 2, "train")


def test_regdb_bad_list_line(tmp_path: Path) -> None:
    root = make_regdb(tmp_path / "RegDB")
    lst = root / "idx" / "train_thermal_1.txt"
    lines = lst.read_text().splitlines()
    _write(lst, "\n".join(lines[:2] + [lines[2] + " extra"] + lines[3:]))
    with pytest.raises(DatasetError, match=r"line 3: expected '<relative/path> <label>'") as e:
        read_regdb(root, 1, "train")
    assert str(lst) in str(e.value)
    _write(lst, lines[0].split()[0] + " zero\n")
    with pytest.raises(DatasetError, match="line 1: expected an integer label"):
        read_regdb(root, 1, "train")
    _write(lst, "\n\n")
    with pytest.raises(DatasetError, match="empty") as e:
        read_regdb(root, 1, "train")
    assert str(lst) in str(e.value)


def test_regdb_missing_image_and_wrong_modality(tmp_path: Path) -> None:
    root = make_regdb(tmp_path / "RegDB")
    gone = root / "Thermal" / "2" / "female_t_00002_1.bmp"
    gone.unlink()
    (root / "Thermal" / "1" / "female_t_00001_0.bmp").unlink()
    with pytest.raises(DatasetError, match="does not exist") as e:
        read_regdb(root, 1, "train")
    msg = str(e.value)
    assert str(root / "Thermal" / "1" / "female_t_00001_0.bmp") in msg and "1 more" in msg
    lst = root / "idx" / "test_visible_1.txt"
    _write(lst, "Thermal/3/female_t_00003_0.bmp 2\n")
    with pytest.raises(DatasetError, match="under Visible/") as e:
        read_regdb(root, 1, "test")
    assert str(lst) in str(e.value)
    _write(lst, "Visible/3/readme.txt 2\n")
    with pytest.raises(DatasetError, match="expected an image path"):
        read_regdb(root, 1, "test")


# ----------------------------------------------------------------------------- LLCM


def test_llcm(tmp_path: Path) -> None:
    root = make_llcm(tmp_path / "LLCM")
    train = read_llcm(root, "train")
    test = read_llcm(root, "test")
    assert len(train) == 8 and len(test) == 4
    assert {(r.modality, r.camid) for r in train} == {(VISIBLE, 2), (VISIBLE, 9), (INFRARED, 1), (INFRARED, 6)}
    assert {r.pid for r in test} == {3}
    assert detect_layout(root) == "llcm"
    lst = _write(root / "idx" / "test_nir.txt", "nir/0003/0003_x06_nir.jpg 3\n")
    _img(root / "nir" / "0003" / "0003_x06_nir.jpg")
    with pytest.raises(DatasetError, match="_cN_") as e:
        read_llcm(root, "test")
    assert str(lst) in str(e.value) and "line 1" in str(e.value)


# ----------------------------------------------------------------------------- Market-1501


def test_market1501(tmp_path: Path) -> None:
    root = make_market(tmp_path / "Market-1501-v15.09.15")
    train = read_market1501(root, "train")
    query = read_market1501(root, "query")
    gallery = read_market1501(root, "gallery")
    assert [(r.pid, r.camid) for r in train] == [(2, 1), (2, 2), (7, 3)]
    assert [(r.pid, r.camid) for r in query] == [(2, 1), (3, 6)]
    assert sorted((r.pid, r.camid) for r in gallery) == [(0, 1), (2, 2), (3, 5)]
    assert all(r.modality == VISIBLE for r in train + query + gallery)
    assert read_dataset("market1501", root, "gallery") == gallery


def test_market1501_bad_name(tmp_path: Path) -> None:
    root = make_market(tmp_path / "Market")
    bad = _img(root / "query" / "person_12.jpg")
    with pytest.raises(DatasetError, match="PPPP_cCsS_FFFFFF_NN") as e:
        read_market1501(root, "query")
    assert str(bad) in str(e.value)
    bad.unlink()
    junk = _write(root / "query" / "list.csv", "x")
    with pytest.raises(DatasetError, match="non-image") as e:
        read_market1501(root, "query")
    assert str(junk) in str(e.value)


# ----------------------------------------------------------------------------- MSMT17


def test_msmt17(tmp_path: Path) -> None:
    root = make_msmt17(tmp_path / "MSMT17_V1")
    got = {s: read_msmt17(root, s) for s in DATASET_SPLITS["msmt17"]}
    assert [(r.pid, r.camid) for r in got["train"]] == [(0, 1), (0, 2), (1, 15)]
    assert [(r.pid, r.camid) for r in got["val"]] == [(2, 3)]
    assert all(os.sep + "test" + os.sep in r.path for r in got["query"] + got["gallery"])
    assert len(got["gallery"]) == 2
    # root-relative paths are accepted too
    _write(root / "list_query.txt", "test/0000/0000_000_04_0303morning_0015_0.jpg 0\n")
    assert read_msmt17(root, "query") == got["query"]
    lst = _write(root / "list_val.txt", "0002/0002_000_xx_0303morning.jpg 2\n")
    with pytest.raises(DatasetError, match="third field") as e:
        read_msmt17(root, "val")
    assert str(lst) in str(e.value)


# ----------------------------------------------------------------------------- SYSU-MM02


def test_sysu_mm02(tmp_path: Path) -> None:
    root = make_sysu_mm02(tmp_path / "SYSU-MM02")
    train = read_sysu_mm02(root, "train")
    test = read_sysu_mm02(root, "test")
    assert len(train) == 5 and all(r.pid == UNKNOWN_PID for r in train)
    assert sorted((r.camid, r.modality) for r in train) == [
        (0, VISIBLE),
        (0, VISIBLE),
        (1, INFRARED),
        (2, INFRARED),
        (2, INFRARED),
    ]
    assert summarize(test) == {
        "images": 8,
        "ids": 2,
        "visible_images": 4,
        "infrared_images": 4,
        "visible_ids": 2,
        "infrared_ids": 2,
        "cameras": {0: 4, 1: 2, 2: 2},
    }
    assert all((r.modality == VISIBLE) == ("rgb" in r.path) for r in test)
    # the mapping is a parameter: the authors' sampler variant makes cam 3 visible
    alt = read_sysu_mm02(root, "train", file_cam_modality={1: INFRARED, 2: INFRARED, 3: VISIBLE})
    assert sum(r.modality == VISIBLE for r in alt) == 2
    msg = r"test_rgb.txt line 1: expected a camera of modality 'visible'"
    with pytest.raises(DatasetError, match=msg):
        read_sysu_mm02(root, "test", file_cam_modality={1: INFRARED, 2: INFRARED, 3: VISIBLE})
    assert detect_layout(root) == "sysu-mm02"


def test_sysu_mm02_bad_lines(tmp_path: Path) -> None:
    root = make_sysu_mm02(tmp_path / "SYSU-MM02")
    lst = root / "test_ir.txt"
    _write(lst, "test/ir/0001_0.jpg 1 1\n")
    with pytest.raises(DatasetError, match="line 1: expected a camera of modality 'infrared'") as e:
        read_sysu_mm02(root, "test")
    assert str(lst) in str(e.value)
    _write(lst, "test/ir/0001_0.jpg 1 7\n")
    with pytest.raises(DatasetError, match=r"camera value in \[1, 2, 3\]"):
        read_sysu_mm02(root, "test")
    _write(root / "train.txt", "train/clip1/00000.jpg 0\n")
    with pytest.raises(DatasetError, match="3 space-separated fields"):
        read_sysu_mm02(root, "train")


# ----------------------------------------------------------------------------- problems=[]


def test_problems_collects_every_per_file_problem(tmp_path: Path) -> None:
    """problems=[] lists every broken file (and skips it) instead of raising on the first."""
    from cmamlib.data.readers import Problem

    regdb = make_regdb(tmp_path / "RegDB")
    gone = [regdb / "Visible/1/female_v_00001_0.bmp", regdb / "Thermal/2/female_t_00002_1.bmp"]
    for g in gone:
        g.unlink()
    with pytest.raises(DatasetError, match="female_v_00001_0.bmp does not exist"):
        read_regdb(regdb, 1, "train")
    problems: list = []
    recs = read_regdb(regdb, 1, "train", problems=problems)
    assert len(recs) == 6 and all(os.path.isfile(r.path) for r in recs)
    assert sorted(p.path for p in problems) == sorted(str(g) for g in gone)
    assert all(isinstance(p, Problem) and "train_" in p.message and "line" in p.message for p in problems)

    market = make_market(tmp_path / "Market")
    bad = [_img(market / "query" / "person_12.jpg"), _write(market / "query" / "notes.txt", "x")]
    problems = []
    assert len(read_market1501(market, "query", problems=problems)) == 2
    assert [p.path for p in problems] == sorted(str(b) for b in bad)
    assert "PPPP_cCsS" in problems[1].message or "PPPP_cCsS" in problems[0].message

    sysu = make_sysu_mm01(tmp_path / "SYSU")
    odd = _write(sysu / "cam1" / "0004" / "readme.txt", "x")
    problems = []
    assert len(read_sysu_mm01(sysu, "test", problems=problems)) == 9
    assert problems == [Problem(str(odd), problems[0].message)] and "non-image" in problems[0].message

    llcm = make_llcm(tmp_path / "LLCM")
    lst = llcm / "idx" / "test_vis.txt"
    _img(llcm / "vis/0003/0003_nocam.jpg")
    _write(lst, lst.read_text() + "vis/0003/0003_nocam.jpg 3\nvis/0003/gone_c02_.jpg 3\n")
    problems = []
    assert len(read_llcm(llcm, "test", problems=problems)) == 4
    assert [os.path.basename(p.path) for p in problems] == ["0003_nocam.jpg", "gone_c02_.jpg"]
    assert "_cN_" in problems[0].message and "does not exist" in problems[1].message

    mm02 = make_sysu_mm02(tmp_path / "SYSU-MM02")
    (mm02 / "test/ir/0001_0.jpg").unlink()
    problems = []
    assert len(read_sysu_mm02(mm02, "test", problems=problems)) == 7
    assert problems[0].message.startswith(f"{mm02 / 'test_ir.txt'} line 1:")


# ----------------------------------------------------------------------------- generic list


@pytest.mark.parametrize("sep, name", [(",", "list.csv"), ("\t", "list.tsv")])
def test_read_list(tmp_path: Path, sep: str, name: str) -> None:
    path = make_csv(tmp_path, sep, name)
    allrows = read_list(path)
    assert len(allrows) == 3
    train = read_list(path, "train")
    assert [(r.pid, r.camid, r.modality) for r in train] == [(1, 1, VISIBLE), (1, 2, INFRARED)]
    assert read_dataset("auto", path, "test") == read_list(path, split="test")
    with pytest.raises(DatasetError, match=r"split='val'.*\['test', 'train'\]"):
        read_list(path, "val")


def test_read_list_errors(tmp_path: Path) -> None:
    path = make_csv(tmp_path)
    lines = path.read_text().splitlines()
    _write(path, "\n".join(lines[:2] + ["imgs/1.png,1,2"] + lines[3:]))
    with pytest.raises(DatasetError, match="line 3: expected 5 fields") as e:
        read_list(path)
    assert str(path) in str(e.value)
    _write(path, "\n".join(lines[:2] + ["imgs/1.png,1,2,thermal,train"]))
    with pytest.raises(DatasetError, match="line 3: expected modality"):
        read_list(path)
    _write(path, "file,pid,cam\n" + lines[1])
    with pytest.raises(DatasetError, match="line 1: expected a header"):
        read_list(path)
    _write(path, "path,pid,camid,modality\nimgs/0.png,1,1,visible\n")
    with pytest.raises(DatasetError, match="'split' column"):
        read_list(path, "train")
    _write(path, "path,pid,camid,modality\nimgs/9.png,1,1,visible\n")
    with pytest.raises(DatasetError, match="does not exist") as e:
        read_list(path)
    assert str(tmp_path / "imgs" / "9.png") in str(e.value)
    _write(path, "path,pid,camid,modality\n")
    with pytest.raises(DatasetError, match="at least one row"):
        read_list(path)


# ----------------------------------------------------------------------------- registry


def test_detect_layout_all(tmp_path: Path) -> None:
    makers = {
        "sysu-mm01": make_sysu_mm01,
        "sysu-mm02": make_sysu_mm02,
        "regdb": make_regdb,
        "llcm": make_llcm,
        "market-1501": make_market,
        "msmt17": make_msmt17,
    }
    assert set(makers) | {"list"} == set(READERS)
    for name, make in makers.items():
        assert detect_layout(make(tmp_path / name)) == name
    assert detect_layout(make_csv(tmp_path / "csv")) == "list"
    assert detect_layout(tmp_path / "nope") is None
    assert detect_layout(tmp_path) is None


def test_unknown_layout(tmp_path: Path) -> None:
    make_regdb(tmp_path / "RegDB")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="unknown layout") as e:
        read_dataset("auto", tmp_path, "train", trial=1)
    msg = str(e.value)
    assert str(tmp_path) in msg
    for need in ("cam1..cam6", "Visible/", "nir/", "bounding_box_train/", "list_train.txt"):
        assert need in msg
    assert "did you mean" in msg and "RegDB (regdb)" in msg
    with pytest.raises(ValueError, match="unknown dataset name"):
        read_dataset("viper", tmp_path, "train")
    with pytest.raises(ValueError, match="split is required"):
        read_dataset("market-1501", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        read_sysu_mm01(tmp_path, "val")


def test_relabel() -> None:
    labels = relabel([7, 3, 7, 100, 3])
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0, 1, 2, 0]
    assert relabel(np.array([], dtype=np.int64)).shape == (0,)


def test_records_are_records(sysu: Path) -> None:
    r = read_sysu_mm01(sysu, "train")[0]
    assert isinstance(r, Record) and isinstance(r.pid, int) and isinstance(r.camid, int)


# ----------------------------------------------------------------------------- synthetic benchmark


def test_readers_on_synthetic_benchmark(tmp_path: Path) -> None:
    """The generator's trees read back with the counts it reports (tiny preset, ~2 s)."""
    from cmamlib.data.synth import generate

    counts = generate(tmp_path, "tiny", seed=0, workers=1, progress=False)["counts"]
    sysu = tmp_path / "SYSU-MM01-synth"
    assert detect_layout(sysu) == "sysu-mm01"
    train = summarize(read_dataset("auto", sysu, "train", verify=True))
    test = summarize(read_dataset("auto", sysu, "test", verify=True))
    c = counts["SYSU-MM01-synth"]
    assert train["ids"] == c["train"]["ids"] + c["val"]["ids"]
    assert train["visible_images"] == c["train"]["visible"] + c["val"]["visible"]
    assert train["infrared_images"] == c["train"]["infrared"] + c["val"]["infrared"]
    assert (test["ids"], test["visible_images"]) == (c["test"]["ids"], c["test"]["visible"])
    query, gallery = sysu_query_gallery(sysu)
    assert len(query) == c["test"]["infrared"] and len(gallery) == c["test"]["visible"]

    regdb = tmp_path / "RegDB-synth"
    assert detect_layout(regdb) == "regdb"
    c = counts["RegDB-synth"]
    for trial in (1, 10):
        recs = read_regdb(regdb, trial, "train") + read_regdb(regdb, trial, "test", verify=True)
        s = summarize(recs)
        assert (s["visible_images"], s["infrared_images"]) == (c["visible"], c["thermal"])
        assert s["ids"] == c["ids"]

    market = tmp_path / "Market-1501-synth"
    assert detect_layout(market) == "market-1501"
    c = counts["Market-1501-synth"]
    train = read_market1501(market, "train", verify=True)
    query = read_market1501(market, "query", verify=True)
    gallery = read_market1501(market, "gallery", verify=True)
    assert (len(train), summarize(train)["ids"]) == tuple(c["bounding_box_train"].values())
    assert (len(query), summarize(query)["ids"]) == tuple(c["query"].values())
    assert {r.pid for r in gallery} - {0} <= {r.pid for r in query}
    assert any(r.pid == 0 for r in gallery) and all(r.pid != -1 for r in gallery)

    mm02 = tmp_path / "SYSU-MM02-synth"
    assert detect_layout(mm02) == "sysu-mm02"
    c = counts["SYSU-MM02-synth"]
    train = summarize(read_dataset("sysu-mm02", mm02, "train", verify=True))
    test = summarize(read_sysu_mm02(mm02, "test", verify=True))
    assert (train["ids"], train["visible_images"], train["infrared_images"]) == (
        0,
        c["train"]["visible"],
        c["train"]["infrared"],
    )  # training ids are unknown
    assert (test["visible_ids"], test["infrared_ids"]) == (c["test"]["ids"],) * 2
    assert (test["visible_images"], test["infrared_images"]) == (c["test"]["visible"], c["test"]["infrared"])

    from cmamlib.data.readers import read_sysu_mm01_official

    split = read_sysu_mm01_official(sysu)
    assert sorted(split.test_ids) == sysu_mm01_split_ids(sysu)["test"] and split.num_trials == 10
