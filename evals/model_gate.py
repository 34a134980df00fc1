"""Whether a standby generation's model may replace the serving one (`freshrag tune
--adopt`): the same questions asked of both, scored alike. Pure, so the rule lives in one
place and the command only formats it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    passed: bool
    lines: list[str]  # one per mode: serving → standby (Δ), and why it passed or not


def model_gate(
    serving: Mapping[str, Mapping[str, float]],
    standby: Mapping[str, Mapping[str, float]],
    *,
    metric: str = "mrr@10",
    gate_mode: str = "hybrid",
    min_gain: float = 0.03,
    max_drop: float = 0.01,
) -> ModelVerdict:
    """Passes when `gate_mode` gains at least `min_gain` of `metric` and no mode scored on
    both loses more than `max_drop` (the noise a few dozen questions carry)."""
    if gate_mode not in serving or gate_mode not in standby:
        return ModelVerdict(False, [f"{gate_mode} was not scored on both generations"])
    lines: list[str] = []
    passed = True
    for mode in [m for m in serving if m in standby]:
        before, after = serving[mode][metric], standby[mode][metric]
        delta = after - before
        line = f"{mode:7} {metric} {before:.3f} → {after:.3f} ({delta:+.3f})"
        if delta < -max_drop:
            passed = False
            line += f": loses more than {max_drop:g}"
        elif mode == gate_mode and delta < min_gain:
            passed = False
            line += f": gains less than {min_gain:g}"
        lines.append(line)
    return ModelVerdict(passed, lines)
