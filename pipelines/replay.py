"""Re-take recorded decisions with the running code, and say whether the outcome is the same.

A decision record pins everything its decision read, so the decision can be taken again offline:
each kind's family exposes `replay_<kind>(inputs, policy) -> (outcome, reasons)`, and replaying a
record compares that outcome with the recorded one. Run against every past decision, a change
to decision code or to a policy (`policy=` replaces the recorded text) shows which decisions it
would have turned.

`REPLAY_FUNCTIONS` maps each kind to the dotted path of its function, imported only when a
record of that kind is replayed: replaying gate records must not need the drift family to
import, and a kind whose function this code lacks is reported as such, not as a crash. The
mapping is the one place to change where a kind is replayed from (tests point a kind at a
function of their own by replacing its entry).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ctloop.components.decisions.record import DecisionRecord, new_record

REPLAY_FUNCTIONS: dict[str, str] = {
    "gate": "ctloop.components.gate.decision.replay_gate",
    "drift": "ctloop.components.drift.monitor.replay_drift",
    "retraining_route": "ctloop.components.retrain.decision.replay_route",
    "canary": "ctloop.components.canary.decision.replay_canary",
    "shadow": "ctloop.components.shadow.decision.replay_shadow",
    "ab": "ctloop.components.experiment.decision.replay_ab",
    "promotion": "ctloop.components.canary.promotion.replay_promotion",
    "rollback": "ctloop.components.canary.promotion.replay_rollback",
}
"""Decision kind -> `module.function` that re-takes it: `(inputs: dict, policy: str) ->
(outcome: dict, reasons: list[str])`."""

ReplayFunction = Callable[[dict[str, Any], str], tuple[dict[str, Any], list[str]]]

SAME, CHANGED, NOT_REPLAYED = "SAME", "CHANGED", "NOT REPLAYED"


class ReplayUnavailableError(ValueError):
    """The running code has no replay function for a record's kind."""


@dataclass(frozen=True)
class Replay:
    """A record and what the running code decides from its inputs.

    Attributes:
        original: The record as it was written.
        replayed: The decision taken again, as a record by the running code (its code version,
            the policy replayed with); None when it could not be taken again.
        problem: Why it could not be taken again (None when it was).
    """

    original: DecisionRecord
    replayed: DecisionRecord | None
    problem: str | None = None

    @property
    def status(self) -> str:
        if self.replayed is None:
            return NOT_REPLAYED
        return SAME if self.replayed.outcome == self.original.outcome else CHANGED

    @property
    def differing_keys(self) -> list[str]:
        """Outcome keys whose values differ (present in one outcome only included)."""
        if self.replayed is None:
            return []
        before, after = self.original.outcome, self.replayed.outcome
        return sorted(key for key in {*before, *after} if before.get(key) != after.get(key))

    def to_json(self) -> dict[str, Any]:
        """The comparison as plain JSON data (what `ctloop replay --json` prints)."""
        replayed = self.replayed
        return {
            "record": self.original.id,
            "kind": self.original.kind,
            "subject": self.original.subject,
            "status": self.status,
            "original": {"outcome": self.original.outcome, "reasons": self.original.reasons},
            "replayed": None
            if replayed is None
            else {"outcome": replayed.outcome, "reasons": replayed.reasons, "code": replayed.code},
            "policy_replaced": replayed is not None and replayed.policy != self.original.policy,
            "differing_keys": self.differing_keys,
            "problem": self.problem,
        }


def replay_function(kind: str) -> ReplayFunction:
    """The running code's function that re-takes decisions of `kind`, imported now.

    Raises:
        ReplayUnavailableError: no function is known for `kind`, or its module or the function
            itself is missing from this code.
    """
    path = REPLAY_FUNCTIONS.get(kind)
    if path is None:
        raise ReplayUnavailableError(
            f"no replay function is known for {kind!r} decisions "
            f"(known: {', '.join(sorted(REPLAY_FUNCTIONS))})"
        )
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ReplayUnavailableError(
            f"cannot replay {kind!r} decisions: {path} is not in this code ({error})"
        ) from error
    function = getattr(module, name, None)
    if not callable(function):
        raise ReplayUnavailableError(
            f"cannot replay {kind!r} decisions: {module_name} has no function {name} in this code"
        )
    return function


def replay(record: DecisionRecord, policy: str | None = None) -> Replay:
    """Take `record`'s decision again from its pinned inputs with the running code.

    Args:
        record: The decision as recorded.
        policy: Policy text to decide with instead of the recorded one (None: the recorded
            text; "" is the replaying code's default policy).

    A missing replay function, inputs or a policy the running code refuses (ValueError, a
    missing or mistyped input), or a function that fails in any other way (a bug that such
    inputs reach) make the replay NOT REPLAYED with the reason, so one such record among many
    does not hide the others' answers.
    """
    policy_text = record.policy if policy is None else policy
    try:
        function = replay_function(record.kind)
        # A copy: a function that changed its inputs must not change what the record says.
        outcome, reasons = function(copy.deepcopy(record.inputs), policy_text)
    except ReplayUnavailableError as error:
        return Replay(record, None, str(error))
    except (ValueError, KeyError, TypeError) as error:
        what = REPLAY_FUNCTIONS[record.kind].rpartition(".")[2]
        return Replay(
            record,
            None,
            f"{what} refused the inputs or the policy: {type(error).__name__}: {error}",
        )
    except Exception as error:  # a bug these inputs reach: the other records' answers count
        what = REPLAY_FUNCTIONS[record.kind].rpartition(".")[2]
        return Replay(record, None, f"{what} failed: {type(error).__name__}: {error}")
    replayed = new_record(
        record.kind,
        subject=record.subject,
        inputs=record.inputs,
        policy=policy_text,
        outcome=outcome,
        reasons=reasons,
    )
    return Replay(record, replayed)


def exit_code(replays: Sequence[Replay]) -> int:
    """0: every decision the same; 1: any changed (a policy or code change turns a past
    decision); 2: any could not be replayed (the answer would be incomplete)."""
    statuses = {replay.status for replay in replays}
    if NOT_REPLAYED in statuses:
        return 2
    return 1 if CHANGED in statuses else 0
