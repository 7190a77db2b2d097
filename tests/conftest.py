"""Test-session settings: passive OpenMP waiting, and no GPU dependence."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
