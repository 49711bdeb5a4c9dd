"""Pipeline parameters that carry a JSON object (hyperparameters, policies): one parser.

KFP passes them as strings, so the UI shows and edits them as text; a typo must fail the
same way for each, naming the parameter and where in the text the JSON broke. A blank text
means the parameter's default for each of them alike (`parse_json_parameter`).

The checks below read the parsed document of a policy (gate, drift, canary). Each raises the
caller's error class, so a policy's parser raises only its own error, and each message names
where in the document the value sits (`where`: "gate policy", "'latency'",
"thresholds.auc", ...) and the value at fault, as JSON.
"""

import copy
import json
import math
from collections.abc import Mapping
from typing import Any


def parse_json_parameter(
    text: str, what: str, error: type[ValueError], *, default: Mapping[str, Any]
) -> dict[str, Any]:
    """A JSON-object parameter's text as a dict; blank text is (a copy of) `default`.

    A string parameter's default in KFP, and an unset line of an environment's params file,
    is the empty string: blank has to mean "the default" for every such parameter, or a
    pipeline's callers would need to know which parameters accept it.

    Raises:
        error: as `parse_json_object` does, for any text that is not blank.
    """
    if not text.strip():
        return copy.deepcopy(dict(default))
    return parse_json_object(text, what, error)


def parse_json_object(text: str, what: str, error: type[ValueError]) -> dict[str, Any]:
    """`text` as a JSON object, or `error` naming `what` and the position or type at fault."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as failure:
        raise error(
            f"{what} is not valid JSON: {failure.msg} at line {failure.lineno} "
            f"column {failure.colno} (char {failure.pos})"
        ) from failure
    return json_object(document, what, error)


def json_object(value: Any, where: str, error: type[ValueError]) -> dict[str, Any]:
    """`value` itself when it is a JSON object (a dict), else `error`.

    Raises:
        error: "{where} must be a JSON object, got {value as JSON}".
    """
    if not isinstance(value, dict):
        raise error(f"{where} must be a JSON object, got {json.dumps(value)}")
    return value


def reject_unknown_keys(
    section: Mapping[str, Any], allowed: tuple[str, ...], where: str, error: type[ValueError]
) -> None:
    """Raise `error` when `section` has a key outside `allowed`: a misspelt key must not
    fall back to a default silently.

    Raises:
        error: "{where} has unknown key(s) [...]; allowed: a, b, c".
    """
    unknown = [key for key in section if key not in allowed]
    if unknown:
        raise error(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(allowed)}")


def json_number(
    value: Any,
    where: str,
    error: type[ValueError],
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    interval_notation: bool = False,
) -> float:
    """`value` as a float when it is a finite JSON number within the bounds, else `error`.

    Args:
        value: The parsed JSON value; true and false are not numbers here.
        where: What the value is, e.g. "drift_share" or "latency: 'median_ms_max'".
        error: The exception class to raise.
        low: Lower bound, inclusive unless `low_open`; -inf: none.
        high: Upper bound, inclusive unless `high_open`; inf: none.
        interval_notation: How the message states the bounds: "must be in (0, 1]" when
            true, else "must be >= 0 and <= 1" (only the finite bounds).

    Raises:
        error: "{where} = {value as JSON} must be a finite number", or "... must be" and the
            bounds it breaks.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise error(f"{where} = {json.dumps(value)} must be a finite number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        if interval_notation:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        else:
            sides = [(">" if low_open else ">=", low), ("<" if high_open else "<=", high)]
            bounds = " and ".join(
                f"{sign} {bound:g}" for sign, bound in sides if math.isfinite(bound)
            )
        raise error(f"{where} = {json.dumps(value)} must be {bounds}")
    return float(value)
