"""Checks on notebook 05's metrics.json (run by tests/test_notebooks.py)."""

import math

REPORT_NAME = "05_pseudo_label_inspector"


def check(m):
    from cmamlib.training.selftrain import check_overrides

    for side in ("visible", "infrared"):
        q = m["clusters"][side]
        assert q["clusters"] >= 1 and 0.0 <= q["purity"] <= 1.0 and 0.0 <= q["noise_fraction"] < 1.0
    assert m["pairs"] >= 1 and 0 <= m["pairs_correct"] <= m["pairs"]
    assert math.isclose(m["pairs_correct_fraction"], m["pairs_correct"] / m["pairs"])
    before, after = m["inspector"]["before"], m["inspector"]["after"]
    assert before["pairs"] == m["pairs"] and before["visible_clusters"] == m["clusters"]["visible"]["clusters"]
    assert after["noise_flags"] + after["rejected"] + after["reassigned"] >= 1  # the simulated clicks did something
    ov = m["overrides"]
    check_overrides(ov)  # what run_selftrain(label_overrides=...) accepts
    assert set(ov) == {"noise_clusters", "reject_pairs", "force_pairs", "epochs"} and ov["epochs"] == [m["epoch"]]
    assert all(len(p) == 2 for p in ov["reject_pairs"] + ov["force_pairs"])
    assert {"clusters_by_size.png", "clusters_by_similarity.png", "after_corrections.png"} <= set(m["snapshots"])
    if m["models"] == "stage1":  # epoch 0 of the run: the same clustering as its log
        assert m["run_log_row"]["vis_clusters"] == m["clusters"]["visible"]["clusters"]
