"""The rule `freshrag tune --adopt` switches by (evals/model_gate.py)."""

from __future__ import annotations

import pytest

from evals.model_gate import model_gate

pytestmark = pytest.mark.unit


def modes(hybrid: float, dense: float) -> dict[str, dict[str, float]]:
    return {"hybrid": {"mrr@10": hybrid}, "dense": {"mrr@10": dense}}


def test_a_gain_on_hybrid_and_no_loss_elsewhere_passes():
    verdict = model_gate(modes(0.70, 0.60), modes(0.74, 0.595))
    assert verdict.passed
    assert verdict.lines[0] == "hybrid  mrr@10 0.700 → 0.740 (+0.040)"


@pytest.mark.parametrize(
    ("standby", "why"),
    [
        (modes(0.72, 0.60), "hybrid  mrr@10 0.700 → 0.720 (+0.020): gains less than 0.03"),
        (modes(0.80, 0.55), "dense   mrr@10 0.600 → 0.550 (-0.050): loses more than 0.01"),
    ],
)
def test_too_small_a_gain_or_a_loss_elsewhere_fails(standby, why):
    verdict = model_gate(modes(0.70, 0.60), standby)
    assert not verdict.passed and why in verdict.lines


def test_a_mode_scored_on_one_side_only_cannot_pass():
    verdict = model_gate({"dense": {"mrr@10": 0.5}}, modes(0.9, 0.9))
    assert not verdict.passed and "hybrid was not scored" in verdict.lines[0]
