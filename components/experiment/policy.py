"""The A/B experiment policy: which metric judges the variants, and how sure a decision must be.

The text is JSON because KFP carries it as a pipeline parameter the UI shows and edits; parsing
it here, before any table is read, makes a typo fail at once with the key and value named.
Every key is optional and a missing key takes the value below; a blank text means all of them
(`DEFAULT_EXPERIMENT_POLICY`)::

    {
      "metric": "log_loss",         # "log_loss" (of the score against a 0/1 label)
                                    # or "outcome_mean" (the mean of a business outcome)
      "outcome_column": "label",    # the labels table's column: the 0/1 label for log_loss,
                                    # a number per row (revenue, converted) for outcome_mean
      "better": "lower",            # log_loss: always "lower"; outcome_mean: "higher" (default)
                                    # or "lower"
      "alpha": 0.05,                # chance, over every check of the experiment together, of
                                    # declaring a difference that is not there
      "min_labelled_rows": 1000,    # labelled rows each variant needs before anything decides
      "mixing_variance": 0.002      # tau^2 of the sequential test's mixture (below)
    }

`mixing_variance` is the variance of the normal mixture over the true difference that the
mixture sequential probability ratio test averages over (`ctloop.components.experiment.
sequential`), in units of the metric's per-row variance: the test is most sensitive to
differences of about its square root in per-row standard deviations, and its interval is
narrowest at about `16 / mixing_variance` labelled rows per variant (0.002: 8,000 rows, where
it detects a difference of 0.05 standard deviations). Any value keeps the error rate at
`alpha`; a poor one only costs rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ctloop.components.json_parameter import json_number, parse_json_parameter, reject_unknown_keys

LOG_LOSS = "log_loss"
OUTCOME_MEAN = "outcome_mean"
LOWER = "lower"
HIGHER = "higher"

DEFAULT_EXPERIMENT_POLICY: dict[str, Any] = {
    "metric": LOG_LOSS,
    "outcome_column": "label",
    "alpha": 0.05,
    "min_labelled_rows": 1000,
    "mixing_variance": 0.002,
}
"""The policy a blank text means, as the JSON a pipeline parameter carries; `better` follows
the metric (lower log loss, higher outcome) unless the policy says otherwise."""


class ExperimentPolicyError(ValueError):
    """An experiment policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class ExperimentPolicy:
    """A parsed, checked experiment policy (shape in the module docstring)."""

    metric: str = LOG_LOSS
    outcome_column: str = "label"
    better: str = LOWER
    alpha: float = 0.05
    min_labelled_rows: int = 1000
    mixing_variance: float = 0.002

    @property
    def metric_name(self) -> str:
        """The metric as a report names it: "log loss" or "mean of <column>"."""
        return "log loss" if self.metric == LOG_LOSS else f"mean of {self.outcome_column}"


_KEYS = ("metric", "outcome_column", "better", "alpha", "min_labelled_rows", "mixing_variance")


def parse_experiment_policy(text: str) -> ExperimentPolicy:
    """Parse and check a policy JSON text; blank means `DEFAULT_EXPERIMENT_POLICY`.

    Raises:
        ExperimentPolicyError: naming the key and value that break the shape.
    """
    root = {
        **DEFAULT_EXPERIMENT_POLICY,
        **parse_json_parameter(
            text, "experiment policy", ExperimentPolicyError, default=DEFAULT_EXPERIMENT_POLICY
        ),
    }
    reject_unknown_keys(root, _KEYS, "experiment policy", ExperimentPolicyError)
    metric = _choice(root, "metric", (LOG_LOSS, OUTCOME_MEAN))
    default_better = LOWER if metric == LOG_LOSS else HIGHER
    better = _choice({"better": default_better, **root}, "better", (LOWER, HIGHER))
    if metric == LOG_LOSS and better != LOWER:
        raise ExperimentPolicyError(
            f'experiment policy: "better" = {json.dumps(better)} contradicts "metric" = '
            f'"{LOG_LOSS}": a lower log loss is always better'
        )
    column = root["outcome_column"]
    if not isinstance(column, str) or not column.strip():
        raise ExperimentPolicyError(
            f'experiment policy: "outcome_column" = {json.dumps(column)} must name a column'
        )
    rows = _number(root, "min_labelled_rows", 2, math.inf)
    if rows != int(rows):
        raise ExperimentPolicyError(
            f'experiment policy: "min_labelled_rows" = {json.dumps(root["min_labelled_rows"])} '
            "must be a whole number"
        )
    return ExperimentPolicy(
        metric=metric,
        outcome_column=column,
        better=better,
        alpha=json_number(
            root["alpha"],
            "experiment policy: 'alpha'",
            ExperimentPolicyError,
            low=0.0,
            high=0.5,
            low_open=True,
            interval_notation=True,
        ),
        min_labelled_rows=int(rows),
        mixing_variance=json_number(
            root["mixing_variance"],
            "experiment policy: 'mixing_variance'",
            ExperimentPolicyError,
            low=0.0,
            low_open=True,
        ),
    )


def _choice(root: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = root[key]
    if value not in allowed:
        raise ExperimentPolicyError(
            f"experiment policy: {json.dumps(key)} = {json.dumps(value)} must be one of "
            + ", ".join(json.dumps(choice) for choice in allowed)
        )
    return value


def _number(root: dict[str, Any], key: str, low: float, high: float) -> float:
    return json_number(
        root[key], f"experiment policy: {key!r}", ExperimentPolicyError, low=low, high=high
    )
