"""README rendering of ``reports/timings.txt`` (``cmamlib.reports``)."""

from __future__ import annotations

from cmamlib.reports import last_reproduce_timings, render_results

RUN1 = "00_a: 10 s\n01_b: 20 s\nreproduce total: 30 s\n"
RUN2 = "00_a: 1 s\n01_b: 2 s\n02_c: 3 s\nreproduce total: 6 s\n"


def test_one_run_is_given_whole():
    assert last_reproduce_timings(RUN1) == ["00_a: 10 s", "01_b: 20 s", "reproduce total: 30 s"]


def test_appended_runs_give_the_last_only():
    assert last_reproduce_timings(RUN1 + "\n" + RUN2) == ["00_a: 1 s", "01_b: 2 s", "02_c: 3 s", "reproduce total: 6 s"]


def test_a_cut_off_run_gives_what_it_wrote():
    assert last_reproduce_timings(RUN1 + "00_a: 9 s\n") == ["00_a: 9 s"]
    assert last_reproduce_timings("00_a: 9 s\n") == ["00_a: 9 s"]
    assert last_reproduce_timings("") == []


def test_readme_section_shows_the_last_run(tmp_path):
    (tmp_path / "timings.txt").write_text(RUN1 + RUN2)
    text = render_results(tmp_path)
    assert "reproduce total: 6 s" in text and "02_c: 3 s" in text
    assert "reproduce total: 30 s" not in text and "10 s" not in text


def test_readme_section_adds_the_last_reproduce_full(tmp_path):
    (tmp_path / "timings.txt").write_text(RUN1)
    (tmp_path / "timings-full.txt").write_text("02_c (investigations): 5 s\nreproduce-full extra: 5 s\n")
    text = render_results(tmp_path)
    assert "reproduce total: 30 s" in text and "reproduce-full extra: 5 s" in text
    assert text.index("reproduce total") < text.index("`make reproduce-full`")
    assert "reproduce-full" not in render_results(tmp_path, block="long")


def _long_metrics(root):
    from cmamlib.reports import write_metrics

    rows = [
        {"variant": "full", "label": "full method", "all_mAP": 0.3, "all_mAP_std": 0.01},
        {"variant": "supervised", "label": "upper bound", "all_mAP": 0.5},
    ]
    write_metrics(
        "03_self_training_cpu-long",
        {
            "preset": "cpu-long",
            "seeds": [0, 1],
            "trials": 10,
            "rows": rows,
            "goal": {"fraction_of_upper_bound_all_mAP": 0.6},
            "seconds": {"full": 12.0},
        },
        root=root,
    )


def test_each_block_is_regenerated_alone(tmp_path):
    from cmamlib.reports import update_readme

    readme = tmp_path / "README.md"
    readme.write_text(
        "top\n<!-- results:start -->\nMAIN\n<!-- results:end -->\nmid\n"
        "<!-- results-long:start -->\nLONG\n<!-- results-long:end -->\nend\n"
    )
    (tmp_path / "timings.txt").write_text(RUN1)
    _long_metrics(tmp_path)
    (tmp_path / "timings-long.txt").write_text("03_self_training_cpu-long: 99 s\nreproduce total: 99 s\n")
    assert update_readme(readme, tmp_path, block="long")
    text = readme.read_text()
    assert "MAIN" in text and "LONG" not in text  # the main block untouched
    long_part = text.split("<!-- results-long:start -->")[1]
    assert "Stage 2 with the `cpu-long` preset" in long_part and "30.0 ± 1.0" in long_part
    assert "full method at 60%" in long_part and "full 12" in long_part
    assert "make reproduce-long" in long_part and "99 s" in long_part and "30 s" not in long_part
    assert update_readme(readme, tmp_path, block="main")
    text = readme.read_text()
    main_part = text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert "MAIN" not in main_part and "cpu-long" not in main_part and "reproduce total: 30 s" in main_part
    assert main_part.count("03_self_training/metrics.json` not written yet") == 1
    assert not update_readme(readme, tmp_path, block="all")  # both blocks already current


def test_a_missing_long_run_says_how_to_make_it(tmp_path):
    assert "not written yet: run `make reproduce-long`" in render_results(tmp_path, "long")


def test_make_reproduce_regenerates_the_readme_headline_and_the_results_page(tmp_path):
    """``readme-table --block main``: the README's short tables (headline block) and every
    table of ``docs/results.md`` (main block), each from the same ``metrics.json``; the
    cpu-long block of the results page is left alone."""
    from cmamlib.reports import main, write_metrics

    rows = [
        {
            "variant": "full",
            "label": "full method",
            "all_R1": 0.2,
            "all_mAP": 0.3,
            "all_mAP_std": 0.01,
            "indoor_mAP": 0.4,
            "source_mAP": 0.5,
        }
    ]
    for name in ("02_cmam_pretraining", "03_self_training"):
        write_metrics(
            name,
            {"seeds": [0, 1], "trials": 10, "rows": rows, "goal": {"fraction_of_upper_bound_all_mAP": 0.31}},
            root=tmp_path,
        )
    (tmp_path / "timings.txt").write_text(RUN1)
    readme, results = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    results.parent.mkdir()
    readme.write_text("intro\n<!-- headline:start -->\nOLD\n<!-- headline:end -->\nmore\n")
    results.write_text(
        "<!-- results:start -->\nOLD\n<!-- results:end -->\n"
        "<!-- results-long:start -->\nLONG\n<!-- results-long:end -->\n"
    )
    main(["readme-table", "--block", "main", "--reports", str(tmp_path), "--readme", str(readme)])
    head = readme.read_text()
    assert "OLD" not in head and "| full method | 30.0 ± 1.0 | 50.0 |" in head  # stage 1: all mAP, source mAP
    assert "| full method | 20.0 | 30.0 ± 1.0 | 40.0 |" in head  # stage 2: all R1, all mAP, indoor mAP
    assert "Goal check: full method at 31%" in head and "reproduce total" not in head
    page = results.read_text()
    assert "OLD" not in page and "LONG" in page and "reproduce total: 30 s" in page
    assert "Stage 2, final results" in page


def test_tensorboard_events_follow_the_log_and_a_resume_purges_redone_epochs(tmp_path):
    """:class:`JsonlLogger` writes every numeric field as a scalar; a resumed run
    (``truncate_to``) replaces the events of the epochs it redoes; a fresh run in the
    same folder removes the old event files."""
    import pytest

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cmamlib.training.common import JsonlLogger

    def scalars(tag: str) -> dict:
        acc = EventAccumulator(str(tmp_path))
        acc.Reload()
        return {e.step: e.value for e in acc.Scalars(tag)}

    log = JsonlLogger(tmp_path / "log.jsonl")
    for epoch, loss in ((0, 3.0), (1, 2.0), (2, 1.5)):
        log.log({"epoch": epoch, "loss_mem": loss, "phase": "dbscan", "kl_on": True, "hashes": ["a", "b"]})
    log.close()
    assert scalars("loss/mem") == {0: 3.0, 1: 2.0, 2: 1.5}
    resumed = JsonlLogger(tmp_path / "log.jsonl")  # killed after epoch 0's checkpoint, resumed at epoch 1
    resumed.truncate_to(1)
    resumed.log({"epoch": 1, "loss_mem": 2.5})
    resumed.close()
    assert scalars("loss/mem") == {0: 3.0, 1: 2.5}
    fresh = JsonlLogger(tmp_path / "log.jsonl")
    fresh.start_fresh()
    assert not list(tmp_path.glob("events.out.tfevents.*")) and not (tmp_path / "log.jsonl").exists()
    assert not JsonlLogger(tmp_path / "log.jsonl", tensorboard=False).tensorboard


def test_a_spread_of_zero_over_several_seeds_is_shown():
    from cmamlib.reports import _flat_ms

    assert _flat_ms({"a": 0.1436, "a_std": 0.0, "seeds": [0, 1]}, "a") == "14.4 ± 0.0"
    assert _flat_ms({"a": 0.1436, "a_std": 0.0, "seeds": [0]}, "a") == "14.4"
    assert _flat_ms({"a": 0.1436, "a_std": 0.012, "seeds": [0, 1]}, "a") == "14.4 ± 1.2"
