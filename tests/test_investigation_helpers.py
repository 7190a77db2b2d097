"""Pure helpers of the investigation scripts (their trainings are not part of the tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "investigations"))

import probe_regdb_emission  # noqa: E402
import probe_stage2_code_defaults as oat  # noqa: E402

from cmamlib.training.selftrain import CODE_DEFAULTS, EARLIER_DEFAULTS  # noqa: E402


def _rec(pid: int, modality: str, serial: int) -> SimpleNamespace:
    letter = "v" if modality == "visible" else "t"
    return SimpleNamespace(pid=pid, modality=modality, path=f"/x/{pid}/male_front_{letter}_{serial:05d}_{pid}.bmp")


def test_twins_pair_the_kth_frames_of_an_identity_by_serial_as_a_loop_does():
    rng = np.random.default_rng(0)
    recs = [_rec(p, m, s) for p in (3, 7) for m in ("visible", "infrared") for s in (p * 100 + k for k in range(4))]
    order = rng.permutation(len(recs))
    recs = [recs[i] for i in order]
    twin = probe_regdb_emission.twins(recs)
    for i, r in enumerate(recs):  # the oracle: rank of the serial among the identity's frames of its modality
        rank = sorted(int(q.path.split("_")[-2]) for q in recs if q.pid == r.pid and q.modality == r.modality)
        k = rank.index(int(r.path.split("_")[-2]))
        other = "infrared" if r.modality == "visible" else "visible"
        ranks = sorted(
            (int(q.path.split("_")[-2]), j) for j, q in enumerate(recs) if q.pid == r.pid and q.modality == other
        )
        assert twin[i] == ranks[k][1]
    assert (twin[twin] == np.arange(len(recs))).all()


def test_twins_mark_frames_without_a_twin():
    recs = [_rec(1, "visible", 1), _rec(1, "visible", 2), _rec(1, "infrared", 5)]
    assert probe_regdb_emission.twins(recs).tolist() == [2, -1, 0]


@pytest.mark.parametrize("row", list(oat.ROWS))
def test_each_one_at_a_time_row_sets_every_other_field_to_its_earlier_value(row):
    sets = oat.row_sets(row)
    got = {a.split("=")[0]: json.loads(a.split("=", 1)[1]) for a in sets[1::2]}
    assert all(flag == "--set" for flag in sets[::2])
    if row == "code":
        assert got == {}
    elif row == "earlier":
        assert got == {f: EARLIER_DEFAULTS[f] for f in oat.FIELDS}
    else:
        field = row.removeprefix("plus_")
        assert got == {f: EARLIER_DEFAULTS[f] for f in oat.FIELDS if f != field}
        assert CODE_DEFAULTS[field] != EARLIER_DEFAULTS[field]


def test_the_table_gives_each_rows_seeds_and_mean(tmp_path, monkeypatch):
    monkeypatch.setattr(oat, "PROBES", tmp_path)
    rows = [{"variant": "full", "seed": s, "all_mAP": m} for s, m in ((1, 0.2), (0, 0.1))]
    (tmp_path / "p_code.json").write_text(json.dumps({"rows": rows}))
    lines = oat.table(["p_"]).splitlines()
    assert lines[0] == "| stage 2 | full, per seed | full, mean |"
    assert lines[-1] == "| all of them (the defaults) | 10.0 / 20.0 | 15.0 ± 5.0 |"
    assert lines[2] == "| earlier stage-2 defaults | - | - |"
    with pytest.raises(SystemExit, match="no .*p_missing_"):
        oat.table(["p_missing_"])
