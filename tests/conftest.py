"""Test-session settings: passive OpenMP waiting, and no GPU dependence."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The 'tiny' synthetic benchmark (seed 0), generated once per test session."""
    from cmamlib.data.synth import generate

    out = tmp_path_factory.mktemp("tiny_data")
    generate(out, "tiny", seed=0, progress=False)
    return out
