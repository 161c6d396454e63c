"""IntellectReq's request gate over CoCorrRec: MRD dataset, three-stage training, budget calibration, curves.

The model itself lives in toolkit.models.gate; this package builds its data and decides with it:
dataset (decision samples + MRD labels), train (`train_gate`), calibrate (threshold.json), policies (gate and
baselines on one footing), curve (quality vs request frequency).
"""
