"""One decision of the loop, on record: what was decided, from what, by which code.

The gate, drift detection, the retraining route, the canary, shadow and A/B analyses, promotion
and rollback each write one record. A record pins every input the decision read (metric values,
profile hashes, the Prometheus figures, the policy text as given), so the same decision can be
taken again offline (`ctloop replay`): with the code of today, or a new policy, against every
past decision. MLflow keeps the records (`ctloop.components.decisions.store`); a KFP step also
writes its record as an artifact.

A record is JSON with a schema tag; reading one checks its shape and names the field that is
wrong, so a hand-edited or truncated file is refused rather than half-replayed.

A decision taken in a KFP run has an id that is a digest of what decided it (`decision_id`):
KFP retries a failed step, and a retry that takes the same decision again gets the same id, so
the store finds it logged and a history shows it once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctloop.components.lineage import CodeVersion, code_version
from ctloop.components.table_io import partial_then_rename

SCHEMA = "ctloop.decision/1"
KINDS = (
    "gate",
    "drift",
    "retraining_route",
    "canary",
    "shadow",
    "ab",
    "promotion",
    "rollback",
)
"""Every kind of decision the loop takes; `ctloop replay` knows how to re-take each."""

MAX_RECORD_BYTES = 64 * 2**20
"""The largest record file read: records pin figures, not data (a drift record of a thousand
features is well under a megabyte)."""

SUBJECT_KEYS = ("registered_model", "model_version", "run_id", "kfp_run_id")


class DecisionRecordError(ValueError):
    """A decision record that is not JSON or breaks the record's shape."""


@dataclass(frozen=True)
class DecisionRecord:
    """One decision.

    Attributes:
        kind: One of `KINDS`.
        subject: Which model it was about: `registered_model`, `model_version`, `run_id` (the
            MLflow run) and `kfp_run_id`, each a string or None.
        inputs: Every figure the decision read, pinned (JSON values), in the shape the kind's
            replay function takes.
        policy: The policy text exactly as given ("" when the default applied; replay then
            applies the default of the replaying code).
        outcome: What was decided, e.g. {"passed": true} or {"action": "promote"}; replay
            compares this object.
        reasons: Sentences a person reads: why that outcome.
        code: The code that decided (`ctloop.components.lineage.code_version`).
        time: When, ISO 8601 UTC.
        id: 32 hex digits: in a KFP run, `decision_id` (equal for the same decision taken
            again by a retry); outside one, a random uuid4.
    """

    kind: str
    subject: dict[str, str | None]
    inputs: dict[str, Any]
    policy: str
    outcome: dict[str, Any]
    reasons: list[str]
    code: CodeVersion
    time: str
    id: str
    schema: str = field(default=SCHEMA)

    def to_json(self) -> str:
        """The record as JSON text (keys sorted, so equal records are equal text)."""
        return json.dumps(asdict(self), sort_keys=True, indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (metrics often are) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def new_record(
    kind: str,
    *,
    subject: Mapping[str, str | None],
    inputs: Mapping[str, Any],
    policy: str,
    outcome: Mapping[str, Any],
    reasons: Sequence[str],
) -> DecisionRecord:
    """A record of a decision taken now, by the running code.

    Raises:
        DecisionRecordError: an unknown kind or subject key, or inputs/outcome that are not
            JSON (a record that cannot be written must fail the step that decided).
    """
    if kind not in KINDS:
        raise DecisionRecordError(f"decision kind {kind!r} is not one of {', '.join(KINDS)}")
    unknown = sorted(set(subject) - set(SUBJECT_KEYS))
    if unknown:
        raise DecisionRecordError(
            f"decision subject has unknown keys {unknown}; allowed: {', '.join(SUBJECT_KEYS)}"
        )
    decided = {
        "kind": kind,
        "subject": {key: _text_or_none(subject.get(key)) for key in SUBJECT_KEYS},
        "inputs": _plain(inputs, "inputs"),
        "policy": policy,
        "outcome": _plain(outcome, "outcome"),
        "reasons": [str(reason) for reason in reasons],
    }
    return DecisionRecord(
        **decided,
        code=code_version(),
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        id=decision_id(decided) if decided["subject"]["kfp_run_id"] else uuid.uuid4().hex,
    )


def decision_id(decided: Mapping[str, Any]) -> str:
    """The id of a decision taken in a KFP run: a digest of what decided it (kind, subject,
    with the run, inputs, policy, outcome, reasons), not of when or by which build, so a retry
    of the step that decides the same again names the same decision. Its figures are part of
    it: a retry that measured other figures took another decision, and both are kept. Outside
    a KFP run (a command, a script) nothing is retried and every decision is new."""
    text = json.dumps(decided, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _plain(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`value` as plain JSON data (a copy): what the file will hold is what replay reads."""
    try:
        return json.loads(json.dumps(dict(value), default=_json_default))
    except (TypeError, ValueError) as error:
        raise DecisionRecordError(f"decision {what} are not JSON: {error}") from None


def write_record(record: DecisionRecord, path: str | Path) -> None:
    """Write the record whole or not at all (a reader never sees half a record)."""
    with partial_then_rename(path) as partial:
        partial.write_text(record.to_json() + "\n")


def parse_record(text: str, where: str = "decision record") -> DecisionRecord:
    """A record from its JSON text, its shape checked.

    Raises:
        DecisionRecordError: naming `where` and the field that is missing or of the wrong type.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:  # or nested deeper than it parses
        raise DecisionRecordError(f"{where} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise DecisionRecordError(f"{where} is not a JSON object")
    if document.get("schema") != SCHEMA:
        raise DecisionRecordError(
            f"{where}: schema is {document.get('schema')!r}, expected {SCHEMA!r}"
        )
    expected = {
        "kind": str,
        "subject": dict,
        "inputs": dict,
        "policy": str,
        "outcome": dict,
        "reasons": list,
        "code": dict,
        "time": str,
        "id": str,
    }
    for key, kind in expected.items():
        if not isinstance(document.get(key), kind):
            raise DecisionRecordError(
                f"{where}: {key!r} is missing or not a JSON {_json_type(kind)}"
            )
    for key, value in document["subject"].items():
        if value is not None and not isinstance(value, str):
            raise DecisionRecordError(
                f"{where}: subject {key!r} is {json.dumps(value)}, not a string or null"
            )
    for reason in document["reasons"]:
        if not isinstance(reason, str):
            raise DecisionRecordError(
                f"{where}: 'reasons' holds {json.dumps(reason)}, not a string"
            )
    if document["kind"] not in KINDS:
        raise DecisionRecordError(
            f"{where}: kind {document['kind']!r} is not one of {', '.join(KINDS)}"
        )
    return DecisionRecord(**{key: document[key] for key in (*expected, "schema")})


def _json_type(kind: type) -> str:
    return {str: "string", dict: "object", list: "array"}[kind]


def read_record(path: str | Path, where: str = "") -> DecisionRecord:
    """The record in a file (`parse_record`), naming the file (or `where`) in every error.

    At most `MAX_RECORD_BYTES` are read: a path to a model file, a data set or `/dev/zero`
    given by mistake is refused at once instead of filling the memory.
    """
    where = where or f"decision record {path}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except OSError as error:
        raise DecisionRecordError(f"cannot read {where}: {error}") from None
    if len(data) > MAX_RECORD_BYTES:
        raise DecisionRecordError(
            f"{where} is larger than {MAX_RECORD_BYTES} bytes: not a decision record"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecisionRecordError(f"{where} is not UTF-8 text: {error}") from None
    return parse_record(text, where)
