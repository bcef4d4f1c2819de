"""The invariants I1–I6 under random sequences of events: tests/sim.py drives the real daemon and emulator.

The short form runs in the suite. The long form runs by hand:

    INGESTD_SIM_SEED=1,2,3 INGESTD_SIM_STEPS=700 .venv/bin/python -m pytest tests/test_simulation.py -k by_hand -s

A failing run prints its seed and step count; add every seed that found a bug to REGRESSION_SEEDS.
"""

from __future__ import annotations

import json
import os

import pytest

from .sim import Simulation

SHORT_STEPS = 16
# Seeds that once found a bug, replayed in the short form (their number of steps in the comment).
REGRESSION_SEEDS: list[int] = []


@pytest.mark.parametrize("seed", [20261130, *REGRESSION_SEEDS])
def test_invariants_hold_under_random_events(tmp_path, seed):
    summary = Simulation(tmp_path, seed).run(SHORT_STEPS)
    assert summary["steps"] == SHORT_STEPS
    assert sum(summary["invariant_checks_passed"].values()) > 0


@pytest.mark.skipif("INGESTD_SIM_SEED" not in os.environ, reason="the long form runs by hand: set INGESTD_SIM_SEED")
def test_invariants_hold_by_hand(tmp_path):
    steps = int(os.environ.get("INGESTD_SIM_STEPS", "500"))
    for seed in (int(s) for s in os.environ["INGESTD_SIM_SEED"].split(",")):
        summary = Simulation(tmp_path / f"seed-{seed}", seed).run(steps)
        print(json.dumps(summary, sort_keys=True))
