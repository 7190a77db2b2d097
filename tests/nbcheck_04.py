"""Checks of notebook 04's metrics.json (used by tests/test_notebooks.py)."""

STAGES = ["random_init", "stage1_F_rg", "stage1_F_g", "stage2_fused", "supervised"]


def check(m):
    assert m["stages"] == STAGES
    assert [r["stage"] for r in m["rows"]] == STAGES
    for r in m["rows"]:
        assert r["centroid_gap_ratio"] >= 0
        for k in (
            "nn_acc_ir_to_vis",
            "nn_acc_vis_to_ir",
            "nn_acc_mean",
            "probe_balanced_accuracy",
            "probe_accuracy",
            "all_R1",
            "all_mAP",
        ):
            assert 0.0 <= r[k] <= 1.0, (r["stage"], k, r[k])
        for k in ("silhouette_modality", "silhouette_identity"):
            assert -1.0 <= r[k] <= 1.0, (r["stage"], k, r[k])
        assert r["n"] == m["test_set"]["n"] == r["n_visible"] + r["n_infrared"]
        assert r["nn_acc_mean"] == (r["nn_acc_ir_to_vis"] + r["nn_acc_vis_to_ir"]) / 2
    assert set(m["clustering"]) == set(STAGES)
    for stage, res in m["clustering"].items():
        assert set(res) == {"dbscan", "hdbscan"}
        for q in res.values():
            assert q["clusters"] >= 0
            for k in ("noise_fraction", "ari", "purity", "nmi", "cross_modal_clusters"):
                assert -1.0 <= q[k] <= 1.0
    assert m["embedding"]["methods"] == ["umap", "tsne"]
