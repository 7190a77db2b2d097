"""PseudoLabelInspector driven headlessly (``.value`` and ``.click()``) on the tiny
synthetic SYSU-MM01 images: navigation, paging, in-place updates, corrections, the
exported ``label_overrides`` and that stage 2 applies them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from cmamlib.data import read_sysu_mm01  # noqa: E402
from cmamlib.data.loading import load_images  # noqa: E402
from cmamlib.data.records import record_arrays  # noqa: E402
from cmamlib.training.selftrain import (  # noqa: E402
    SelfTrainConfig,
    apply_overrides,
    check_overrides,
    cluster_and_match,
    run_selftrain,
    selftrain_epoch_features,
)
from cmamlib.widgets import Entry, PseudoLabelInspector  # noqa: E402


@pytest.fixture(scope="module")
def recs(tiny_data):
    return read_sysu_mm01(tiny_data / "SYSU-MM01-synth", "train")


@pytest.fixture(scope="module")
def constructed(recs):
    """Clusters built by hand from the true ids (16 ids):

    * visible: ids of rank 0 and 1 merged into cluster 0 (purity 0.5), rank r in 2..14 ->
      cluster r - 1, rank 15 -> noise;
    * infrared: rank r -> cluster 15 - r (pure; ids differ from the visible ones);
    * pairs: the correct one of every visible cluster, except visible 5 and 6 whose
      partners are swapped (two wrong pairs); infrared 14 (rank 1) and 0 (rank 15)
      unmatched.

    Features: one random direction per id + small noise, so centroid similarities are
    high for correct pairs and low for the swapped ones.
    """
    pids, _, is_ir = record_arrays(recs)
    rank = {p: k for k, p in enumerate(np.unique(pids))}
    r = np.array([rank[p] for p in pids])
    labels = np.where(is_ir, 15 - r, np.where(r == 15, -1, np.maximum(r - 1, 0)))
    pairs = [[0, 15]] + [[k, 14 - k] for k in range(1, 14)]
    pairs[5], pairs[6] = [5, 8], [6, 9]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(16, 16))[r] + 0.1 * rng.normal(size=(len(r), 16))
    return feats.astype(np.float32), labels, np.array(pairs), pids


def _inspector(recs, constructed, **kw):
    feats, labels, pairs, pids = constructed
    return PseudoLabelInspector(recs, feats, labels, pairs, pids, **{"page_size": 4, "epoch": 0, **kw})


def test_entries_and_display(recs, constructed):
    ins = _inspector(recs, constructed)
    # 14 pairs + 2 unmatched infrared clusters; largest first
    assert len(ins.entries) == 16 and ins.position.max == 16
    assert {e for e in ins.entries if e.vis is None} == {Entry(None, 14), Entry(None, 0)}
    assert ins.current == Entry(0, 15)  # 12 + 2 images
    assert "visible 0</b>: 12 images, purity 0.50" in ins.vis_header.value
    assert "infrared 15</b>: 2 images, purity 1.00" in ins.ir_header.value
    assert "correct" in ins.info.value and "12/14" in ins.summary.value
    # alternatives: infrared 14 (the merged second id) is nearer than the match
    assert ins.nearest("visible", 0, 2)[0][0] == 14
    assert "nearest to visible 0: infrared 14" in ins.alternatives.value
    # thumbnails: one page of 4 (page_size) JPEGs; impure ones framed red
    assert len(ins.vis_grid.children) == 4 and len(ins.ir_grid.children) == 2
    assert all(w.value[:2] == b"\xff\xd8" for w in ins.vis_grid.children)  # JPEG magic
    borders = [w.layout.border for w in ins.vis_grid.children]
    assert sum("#d00" in b for b in borders) == 2  # two of the first four are of the minority id
    assert ins.thumbnail(0) is ins.thumbnail(0)  # cached
    # a tooltip on an Image widget breaks its view in JupyterLab (found by make test-browser)
    assert not any(w.tooltip for w in ins.vis_thumbs + ins.ir_thumbs)
    # reassignment choices: the other modality, nearest first, all of them
    assert [v for _, v in ins.reassign_choice.options][:2] == [14, 15]
    assert len(ins.reassign_choice.options) == 16


def test_navigation_updates_in_place(recs, constructed):
    ins = _inspector(recs, constructed)
    top = ins.widget.children
    grid, pool, thumbs0 = ins.vis_grid, list(ins.vis_thumbs), list(ins.vis_grid.children)
    first_vals = [w.value for w in thumbs0]
    header = ins.vis_header.value
    ins.next_button.click()
    assert ins.position.value == 2 and ins.current != Entry(0, 15)
    assert ins.vis_header.value != header
    # the same widget objects, new contents
    assert ins.widget.children == top and all(a is b for a, b in zip(ins.widget.children, top))
    assert ins.vis_grid is grid and all(a is b for a, b in zip(ins.vis_thumbs, pool))
    assert all(any(w is p for p in pool) for w in ins.vis_grid.children)
    assert [w.value for w in ins.vis_grid.children[:4]] != first_vals
    ins.prev_button.click()
    assert ins.current == Entry(0, 15) and [w.value for w in ins.vis_grid.children] == first_vals
    assert ins.prev_button.disabled
    ins.position.value = 16
    assert ins.next_button.disabled and ins.current.vis is None
    assert len(ins.vis_grid.children) == 0 and ins.noise_vis_button.disabled and ins.reject_button.disabled
    ins.next_button.click()  # at the end: stays
    assert ins.position.value == 16


def test_paging(recs, constructed):
    ins = _inspector(recs, constructed)
    assert "page 1/3 · 12 images" in ins.vis_page.value and ins.vis_prev_page.disabled
    seen = [tuple(w.value for w in ins.vis_grid.children)]
    ins.vis_next_page.click()
    ins.vis_next_page.click()
    assert "page 3/3" in ins.vis_page.value and ins.vis_next_page.disabled
    assert len(ins.vis_grid.children) == 4
    seen.append(tuple(w.value for w in ins.vis_grid.children))
    assert seen[0] != seen[1]
    ins.vis_next_page.click()  # no page 4
    assert "page 3/3" in ins.vis_page.value
    ins.vis_prev_page.click()
    assert "page 2/3" in ins.vis_page.value
    assert "page 1/1" in ins.ir_page.value and ins.ir_next_page.disabled
    ins.next_button.click()  # another cluster starts at its first page
    assert "page 1/" in ins.vis_page.value
    big = _inspector(recs, constructed, page_size=24)
    assert len(big.vis_grid.children) == 12 and "page 1/1" in big.vis_page.value


def test_sorting(recs, constructed):
    ins = _inspector(recs, constructed)
    ins.position.value = 5
    ins.sort.value = "match similarity (lowest first)"
    assert ins.position.value == 1
    assert set(ins.order[:2]) == {Entry(5, 8), Entry(6, 9)}  # the two wrong pairs
    assert "wrong" in ins.info.value
    assert ins.order[-2:] == [e for e in ins.order if e.vis is None]  # unmatched last
    ins.sort.value = "purity (lowest first)"
    assert ins.current == Entry(0, 15)
    ins.sort.value = "size (largest first)"
    sizes = [ins._entry_size(e) for e in ins.order]
    assert sizes == sorted(sizes, reverse=True)
    no_ids = PseudoLabelInspector(recs, constructed[0], constructed[1], constructed[2])
    assert not any("purity" in o for o in no_ids.sort.options) and "purity" not in no_ids.vis_header.value
    with pytest.raises(ValueError, match="needs true_pids"):
        PseudoLabelInspector(recs, constructed[0], constructed[1], constructed[2], sort_by="purity")


def test_corrections_and_export(recs, constructed, tmp_path):
    feats, labels, pairs, pids = constructed
    ins = _inspector(recs, constructed)
    # 1. the impure visible cluster 0 -> noise
    ins.noise_vis_button.click()
    assert ins.noise_vis_button.description == "unflag visible noise" and "[noise]" in ins.vis_header.value
    # 2. the two wrong pairs: reject one, reassign the other to its true partner
    ins.sort.value = "match similarity (lowest first)"
    ins.show(Entry(5, 8))
    ins.reject_button.click()
    assert ins.reject_button.description == "restore match" and "match rejected" in ins.info.value
    ins.show(Entry(6, 9))
    ins.reassign_choice.value = 8  # visible 6 is id rank 7 -> infrared 15 - 7
    ins.reassign_button.click()
    assert ins.ir_header.value.startswith("<b>infrared 8</b>") and "reassigned (was infrared 9)" in ins.info.value
    assert "correct" in ins.info.value
    # 3. an unmatched infrared cluster: paired with a visible cluster
    ins.show(Entry(None, 0))
    assert ins.reassign_choice.description.startswith("visible")
    ins.reassign_choice.value = 13
    ins.reassign_button.click()
    ov = ins.export(tmp_path / "overrides.json")
    assert ov == {
        "noise_clusters": {"visible": [0], "infrared": []},
        "reject_pairs": [[5, 8]],
        "force_pairs": [[6, 8], [13, 0]],
        "epochs": [0],
    }
    assert json.loads((tmp_path / "overrides.json").read_text()) == ov
    assert "force_pairs" in ins.export_view.value
    # stage 2 accepts it and computes the same corrected pairs as the inspector
    check_overrides(ov)
    v, i, p = apply_overrides(labels[~_ir(recs)], labels[_ir(recs)], pairs, ov)
    assert (v == -1).sum() == 12 + 6  # the merged cluster + the rank-15 noise
    got = {tuple(x) for x in p.tolist()}
    assert (6, 8) in got and (13, 0) in got and (5, 8) not in got and (0, 15) not in got
    assert (6, 9) not in got and (13, 1) not in got  # forced pairs replace the old ones
    np.testing.assert_array_equal(p, ins.corrected()[2])
    st = ins.stats()
    assert (
        st["pairs"] == 14 and st["pairs_after_corrections"] == len(p) == 12
    )  # - noise (0, 15), rejected (5, 8), replaced (6, 9), (13, 1); + (6, 8), (13, 0)
    # every pair correct except the forced (13, 0) (visible 13 is rank 14, infrared 0 rank 15)
    assert st["pairs_correct"] == 12 and st["pairs_correct_after_corrections"] == 11
    # undo on the reassigned entry; unflag noise
    ins.show(Entry(6, 9))
    ins.reset_button.click()
    ins.show(Entry(0, 15))
    ins.noise_vis_button.click()
    assert ins.export()["force_pairs"] == [[13, 0]] and ins.export()["noise_clusters"]["visible"] == []


def test_export_leaves_out_pairs_of_noise_clusters(recs, constructed):
    feats, labels, pairs, pids = constructed
    ins = _inspector(recs, constructed, epoch=None)
    ins.reject(5, 8)
    ins.reassign(7, 6)
    ins.flag_noise("visible", 5)
    ins.flag_noise("infrared", 6)
    ov = ins.export()
    assert ov == {"noise_clusters": {"visible": [5], "infrared": [6]}, "reject_pairs": [], "force_pairs": []}
    apply_overrides(labels[~_ir(recs)], labels[_ir(recs)], pairs, ov)  # no error
    # the last reassignment of a cluster wins (a forced pair replaces its clusters' pairs)
    ins.reassign(2, 3)
    ins.reassign(2, 4)
    ins.reassign(3, 4)
    assert ins.export()["force_pairs"] == [[3, 4]]
    with pytest.raises(ValueError, match="visible cluster 99 does not exist"):
        ins.flag_noise("visible", 99)
    with pytest.raises(ValueError, match="not a matched pair"):
        ins.reject(1, 1)


def test_bad_inputs(recs, constructed):
    feats, labels, pairs, pids = constructed
    with pytest.raises(ValueError, match="features has shape"):
        PseudoLabelInspector(recs, feats[:5], labels, pairs)
    with pytest.raises(ValueError, match=r"labels has shape"):
        PseudoLabelInspector(recs, feats, labels[:5], pairs)
    with pytest.raises(ValueError, match="names infrared cluster 77"):
        PseudoLabelInspector(recs, feats, labels, [[0, 77]])


def test_snapshot(recs, constructed, tmp_path):
    ins = _inspector(recs, constructed)
    ins.reject_button.click()
    path = ins.snapshot(tmp_path / "snap" / "clusters.png", n_clusters=3)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no entry"):
        ins.snapshot(tmp_path / "x.png", start=99)


def test_images_argument_and_real_clustering_accepted_by_stage2(recs, tmp_path):
    """The inspector on a real epoch-0 clustering (cluster_and_match), its export fed
    to a 1-epoch run_selftrain: the run trains on exactly the corrected labels."""
    cfg = SelfTrainConfig(
        width=8,
        image_size=(32, 16),
        batch_size=16,
        num_instances=4,
        epochs=1,
        iters_per_epoch=2,
        k1=6,
        k2=3,
        eps=0.5,
        min_samples=2,
        eval_batch_size=64,
        device="cpu",
    )
    imgs = load_images(recs, cfg.image_size, progress=False)
    pids, cams, is_ir = record_arrays(recs)
    from cmamlib.models import build_model

    torch.manual_seed(0)
    a, b = build_model("resnet18", width=8), build_model("resnet18", width=8)
    _, _, fused = selftrain_epoch_features(a, b, imgs, cfg, epoch=0)
    el = cluster_and_match(fused, is_ir, cams, cfg, epoch=0)
    ins = PseudoLabelInspector.from_epoch(recs, el, pids, images=imgs, epoch=0, page_size=6)
    assert ins.stats()["pairs"] == len(el.raw_pairs)
    e = ins.current
    assert e.vis is not None and e.ir is not None
    np.testing.assert_allclose(
        ins.similarity(e.vis, e.ir),
        el.similarity[[tuple(p) for p in el.pairs.tolist()].index((e.vis, e.ir))],
        atol=1e-5,
    )
    ins.noise_ir_button.click()
    ins.next_button.click()
    if ins.current.ir is not None and ins.current.vis is not None:
        ins.reassign_button.click()  # the nearest other infrared cluster
    ins.export(tmp_path / "ov.json")
    ov = json.loads((tmp_path / "ov.json").read_text())
    res = run_selftrain(cfg, recs, imgs, init_models=(a, b), progress=False, label_overrides=ov)
    assert res.history[0]["overrides_applied"]
    want = cluster_and_match(fused, is_ir, cams, cfg, epoch=0, label_overrides=ov)
    np.testing.assert_array_equal(res.labels, want.labels)
    np.testing.assert_array_equal(want.pairs, ins.corrected()[2])
    # the ids flagged as noise are noise in training
    flagged = ov["noise_clusters"]["infrared"][0]
    assert (res.labels[is_ir][el.raw_ir_labels == flagged] == -1).all()
    # a run with another epoch list does not apply them
    res2 = run_selftrain(
        replace(cfg, iters_per_epoch=1),
        recs,
        imgs,
        init_models=(a, b),
        progress=False,
        label_overrides={**ov, "epochs": [3]},
    )
    assert "overrides_applied" not in res2.history[0]


def _ir(recs):
    return np.array([r.modality == "infrared" for r in recs])
