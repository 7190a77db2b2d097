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
