"""Training stages: supervised calibration, stage 1 (CMAM), stage 2 (self-training)."""
