"""The report's usage numbers from /usage totals: pure functions, no service."""

import pytest

from evals.formatting import fmt
from evals.usage import answered, of_prompts, usage_section

pytestmark = pytest.mark.unit

TOTALS = {
    "total": {"calls": 6, "cost_usd": 0.006, "input_tokens": 600, "cache_hits": 0},
    "prompts": [
        {"prompt": "grounded-answer@1", "calls": 3, "cost_usd": 0.002, "input_tokens": 200},
        {"prompt": "grounded-answer@2", "calls": 3, "cost_usd": 0.004, "input_tokens": 400},
    ],
}


def test_a_candidate_prompts_calls_are_not_the_productions_cost():
    rows = [{"prompt": "grounded-answer@1", "refused": False}]
    assert of_prompts(TOTALS, rows)["cost_usd"] == pytest.approx(0.002)
    assert of_prompts(TOTALS, rows)["calls"] == 3
    assert of_prompts(TOTALS, [{"refused": True}]) == TOTALS["total"]  # rows name no prompt


def test_refusals_and_timeouts_answer_nothing():
    rows = [{"refused": False}, {"refused": True}, {"refused": False, "timed_out": True}]
    assert answered(rows) == 1


def test_cost_per_answer_and_the_caches_share():
    window = {"calls": 3, "cache_hits": 1, "saved_tokens": 90, "saved_usd": 0.0005}
    s = usage_section(TOTALS["total"], window, answered=4, window_h=24, scope="all")
    assert s["cost_per_answer_usd"] == pytest.approx(0.0015)
    assert s["cache_hit_rate"] == 0.25 and s["cache_saved_usd"] == 0.0005
    nothing = usage_section({}, {}, answered=0, window_h=24, scope="key")
    assert nothing["cost_per_answer_usd"] is None and nothing["cache_hit_rate"] is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0015, "$0.0015"), (0.00000012, "$0"), (12.3456, "$12.35"), (0, "$0")],
)
def test_dollars_read_as_dollars(value, shown):
    assert fmt("usage.cost_per_answer_usd", value) == shown
