"""Pipeline parameters that carry a JSON object (hyperparameters, gate policy): one parser.

KFP passes them as strings, so the UI shows and edits them as text; a typo must fail the
same way for each, naming the parameter and where in the text the JSON broke.
"""

import json
from typing import Any


def parse_json_object(text: str, what: str, error: type[ValueError]) -> dict[str, Any]:
    """`text` as a JSON object, or `error` naming `what` and the position or type at fault."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as failure:
        raise error(
            f"{what} is not valid JSON: {failure.msg} at line {failure.lineno} "
            f"column {failure.colno} (char {failure.pos})"
        ) from failure
    if not isinstance(document, dict):
        raise error(f"{what} must be a JSON object, got {json.dumps(document)}")
    return document
