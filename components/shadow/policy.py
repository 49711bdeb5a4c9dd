"""The shadow policy: what a shadow model must hold before it may take live traffic, as data.

A shadow scores the served model's requests off the request path and nobody sees its answers
(`ctloop.serving` counts the paired figures); the policy says how close its answers must be,
and how healthy it must be, for the rollout to go on to a canary. The text is JSON because KFP
carries it as a pipeline parameter the UI shows and edits; parsing it here, before any figure
is read, makes a typo fail at once with the key and value named. Every key is optional and a
missing key takes the value below; a blank text means all of them (`DEFAULT_SHADOW_POLICY`)::

    {
      "min_rows": 1000,                # rows both models scored before any check decides
      "max_disagreement_rate": 0.02,   # rows whose 0/1 label (threshold 0.5) differs
      "max_mean_abs_difference": 0.05, # mean |shadow score - served score| per row
      "max_error_rate": 0.0,           # rows the shadow failed to score, of those given to it
      "max_skipped_fraction": null,    # rows skipped (shadow queue full), of all served rows
      "bake_time_s": 600,              # observe this long before going on
      "step_s": 30,                    # read the figures this often
      "inconclusive": "reject"         # too few rows after the bake time: "reject" | "go_on"
    }

A `max_*` of null switches that check off (the figure is still reported). Skipped rows are off
by default: they measure the shadow queue's capacity against the traffic, not the model, and
the rows that were compared are a fair sample of the traffic either way.

How the checks are applied and what they lead to is `ctloop.components.shadow.decision`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

from ctloop.components.json_parameter import json_number, parse_json_parameter, reject_unknown_keys

# The verdicts of a shadow analysis; the first two are also the actions, which the policy's
# `inconclusive` chooses between.
GO_ON = "go_on"
REJECT = "reject"
INCONCLUSIVE = "inconclusive"

DEFAULT_SHADOW_POLICY: dict[str, Any] = {
    "min_rows": 1000,
    "max_disagreement_rate": 0.02,
    "max_mean_abs_difference": 0.05,
    "max_error_rate": 0.0,
    "max_skipped_fraction": None,
    "bake_time_s": 600,
    "step_s": 30,
    "inconclusive": REJECT,
}
"""The policy a blank text means, as the JSON a pipeline parameter carries."""


class ShadowPolicyError(ValueError):
    """A shadow policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class ShadowPolicy:
    """A parsed, checked shadow policy (shape and defaults in the module docstring)."""

    min_rows: float = 1000.0
    max_disagreement_rate: float | None = 0.02
    max_mean_abs_difference: float | None = 0.05
    max_error_rate: float | None = 0.0
    max_skipped_fraction: float | None = None
    bake_time_s: float = 600.0
    step_s: float = 30.0
    inconclusive: str = REJECT


# Key -> (low, high, may be null); every bound is inclusive.
_NUMBERS: dict[str, tuple[float, float, bool]] = {
    "min_rows": (0.0, math.inf, False),
    "max_disagreement_rate": (0.0, 1.0, True),
    "max_mean_abs_difference": (0.0, 1.0, True),
    "max_error_rate": (0.0, 1.0, True),
    "max_skipped_fraction": (0.0, 1.0, True),
    "bake_time_s": (0.0, math.inf, False),
    "step_s": (1e-3, math.inf, False),
}
_KEYS = tuple(field.name for field in fields(ShadowPolicy))


def parse_shadow_policy(text: str) -> ShadowPolicy:
    """Parse and check a policy JSON text; blank means `DEFAULT_SHADOW_POLICY`.

    Raises:
        ShadowPolicyError: naming the key and value that break the shape.
    """
    root = parse_json_parameter(
        text, "shadow policy", ShadowPolicyError, default=DEFAULT_SHADOW_POLICY
    )
    reject_unknown_keys(root, _KEYS, "shadow policy", ShadowPolicyError)
    values: dict[str, Any] = {}
    for key, (low, high, nullable) in _NUMBERS.items():
        if key not in root:
            continue
        if root[key] is None and nullable:
            values[key] = None
        else:
            where = f"shadow policy: {key!r}"
            values[key] = json_number(root[key], where, ShadowPolicyError, low=low, high=high)
    inconclusive = root.get("inconclusive", REJECT)
    if inconclusive not in (REJECT, GO_ON):
        raise ShadowPolicyError(
            f"shadow policy: 'inconclusive' = {json.dumps(inconclusive)} must be "
            f'"{REJECT}" or "{GO_ON}" (what too few compared rows after the bake time leads to)'
        )
    return ShadowPolicy(**values, inconclusive=inconclusive)
