"""Promotions and rollbacks on record: what triggered each, and the versions before and after.

A promotion or a rollback judges no figures: it follows from a decision, a canary, shadow or
A/B analysis, or from an operator's command. Its record pins that trigger (the analysis
record's kind, id and outcome; or `manual` with the command's flags and the user who ran it;
or `unrecorded` when a step was given no analysis record), the version acted on, the champion
and canary before and after, and what changed on the service and in the registry. The
record's outcome is the action and the version.

Replay re-derives the action from the trigger, so a change to how the rollout maps analyses to
actions can be tested against every past promotion: an analysis' outcome leads to the same
action every time (canary: its action; shadow: go_on promotes, reject rolls back; A/B:
promote promotes the winner, rollback rolls back, continue does nothing); a manual or
unrecorded action has nothing to re-decide and is reported as taken.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from typing import Any

from ctloop.components.canary.decision import CanaryDecision, canary_record
from ctloop.components.decisions.record import (
    DecisionRecord,
    DecisionRecordError,
    new_record,
    read_record,
)

PROMOTION = "promotion"
ROLLBACK = "rollback"
MANUAL = "manual"
UNRECORDED = "unrecorded"
NO_ACTION = "none"

_ACTIONS = {PROMOTION: "promote", ROLLBACK: "rollback"}
"""The action each record kind takes."""

ACTION_OF = {
    "canary": {"promote": "promote", "rollback": "rollback"},
    "shadow": {"go_on": "promote", "reject": "rollback"},
    "ab": {"promote": "promote", "rollback": "rollback", "continue": NO_ACTION},
}
"""The action an analysis' outcome (its `action`) leads to, per analysis kind."""


def analysis_trigger(record: DecisionRecord) -> dict[str, Any]:
    """The trigger of an action taken because of the analysis `record`.

    Raises:
        DecisionRecordError: `record` is not of an analysis that leads to an action.
    """
    if record.kind not in ACTION_OF:
        raise DecisionRecordError(
            f"a {record.kind} decision record ({record.id}) triggers no promotion or rollback; "
            f"give the record of a {', '.join(ACTION_OF)} analysis"
        )
    return {"kind": record.kind, "record_id": record.id, "outcome": record.outcome}


def manual_trigger(command: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The trigger of an action an operator ran by hand: the command, its flags (leave out
    anything secret) and the user who ran it."""
    return {"kind": MANUAL, "command": command, "flags": flags, "user": _user()}


def _user() -> str:
    """Who ran the command; a container running as a uid with no passwd entry has no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def unrecorded_trigger(reason: str = "") -> dict[str, Any]:
    """The trigger of an action a pipeline step took without being given an analysis record."""
    return {"kind": UNRECORDED, "reason": reason}


def step_trigger(record_path: str, reason: str = "") -> dict[str, Any]:
    """A pipeline step's trigger: the analysis record at `record_path`, read and checked
    before anything is changed; an empty path: unrecorded, with `reason`.

    Raises:
        DecisionRecordError: the file is not a decision record, or not an analysis'.
    """
    if not record_path:
        return unrecorded_trigger(reason)
    return analysis_trigger(read_record(record_path))


def action_record(
    outcome: dict[str, Any],
    trigger: dict[str, Any],
    *,
    reasons: Sequence[str] = (),
    registered_model: str = "",
    kfp_run_id: str = "",
) -> DecisionRecord:
    """The promotion or rollback record of `outcome` (as `promotion.promote` and
    `promotion.roll_back` return it), taken because of `trigger`."""
    kind = PROMOTION if outcome["action"] == _ACTIONS[PROMOTION] else ROLLBACK
    return new_record(
        kind,
        subject={
            "registered_model": registered_model,
            "model_version": outcome["version"],
            "kfp_run_id": kfp_run_id,
        },
        inputs={
            "trigger": trigger,
            "version": outcome["version"],
            "inference_service": outcome["inference_service"],
            "deployment_mode": outcome["deployment_mode"],
            "before": outcome["before"],
            "after": outcome["after"],
            "changes": outcome["changes"],
        },
        policy="",
        outcome={"action": outcome["action"], "version": outcome["version"]},
        reasons=[_trigger_text(trigger), *reasons],
    )


def canary_analysis_records(
    decision: CanaryDecision | None,
    outcome: dict[str, Any],
    *,
    policy_text: str,
    registered_model: str = "",
    kfp_run_id: str = "",
    tracking_uri: str = "",
) -> tuple[DecisionRecord, DecisionRecord]:
    """The two records of a canary analysis step (`promotion.run_canary_analysis`'s result):
    the analysis, and the promotion or rollback it led to, which names it as its trigger.
    Without a decision (the version already served all traffic as the champion), what the
    registry and the service said is the promotion's `before`.

    A retry of a step whose first try promoted or rolled back, then failed to log its records,
    finds the action done, with nothing to analyse: with `tracking_uri`, the analysis this
    KFP run logged for the version (`store.logged_decision`) is the one the action names,
    and no second analysis is recorded; an action logged for that analysis is returned too,
    so that a step retried again logs nothing new. A rollback found done with no analysis
    logged (the first try could log none) gets an analysis record saying so, without
    readings: those are in the first try's log only."""
    subject = {"registered_model": registered_model, "kfp_run_id": kfp_run_id}
    if decision is None and tracking_uri and kfp_run_id:
        logged = _logged_canary_records(tracking_uri, outcome, **subject)
        if logged is not None:
            return logged
    if decision is None and outcome["action"] == _ACTIONS[ROLLBACK]:
        analysis = _found_rolled_back_record(outcome, policy_text=policy_text, **subject)
        return analysis, action_record(outcome, analysis_trigger(analysis), **subject)
    if decision is None:
        champion, serving = outcome["before"]["champion"], outcome["before"]["canary"]
    else:
        champion, serving = decision.target.primary_version, decision.target.canary_version
    analysis = canary_record(
        decision,
        version=outcome["version"],
        champion=champion,
        serving_canary=serving,
        policy_text=policy_text,
        **subject,
    )
    reasons = [] if decision is None else decision.reasons
    return analysis, action_record(outcome, analysis_trigger(analysis), reasons=reasons, **subject)


def _logged_canary_records(
    tracking_uri: str, outcome: dict[str, Any], *, registered_model: str, kfp_run_id: str
) -> tuple[DecisionRecord, DecisionRecord] | None:
    """The canary analysis of `outcome`'s version logged in KFP run `kfp_run_id`, when it led
    to `outcome`'s action, with the action record logged for it (not logged yet: this try's)."""
    from ctloop.components.decisions.store import logged_decision

    subject = {"registered_model": registered_model, "kfp_run_id": kfp_run_id}
    about = {**subject, "model_version": outcome["version"]}
    analysis = logged_decision(tracking_uri, "canary", about)
    if (
        analysis is None
        or ACTION_OF["canary"].get(analysis.outcome.get("action")) != outcome["action"]
    ):
        return None
    trigger = analysis_trigger(analysis)
    kind = PROMOTION if outcome["action"] == _ACTIONS[PROMOTION] else ROLLBACK
    action = logged_decision(tracking_uri, kind, about)
    if action is None or action.inputs.get("trigger") != trigger:
        # Why, as the first try's record said: a rollback's failures (a promotion has none).
        reasons = analysis.reasons if kind == ROLLBACK else []
        action = action_record(outcome, trigger, reasons=reasons, **subject)
    return analysis, action


def _found_rolled_back_record(
    outcome: dict[str, Any], *, policy_text: str, registered_model: str, kfp_run_id: str
) -> DecisionRecord:
    """The analysis record of a canary found rolled back by an earlier try of its step, which
    could log no record: the verdict is the rollback it led to; the readings it judged are
    only in that try's log, so it pins none (and cannot be replayed)."""
    version, champion = outcome["version"], outcome["after"]["champion"]
    found = canary_record(  # an analysis that read nothing: its inputs as the retry found them
        None,
        version=version,
        champion=champion,
        serving_canary=outcome["before"]["canary"],
        policy_text=policy_text,
        registered_model=registered_model,
        kfp_run_id=kfp_run_id,
    )
    return new_record(
        "canary",
        subject=found.subject,
        inputs=found.inputs,
        policy=policy_text,
        outcome={"verdict": _ACTIONS[ROLLBACK], "action": _ACTIONS[ROLLBACK]},
        reasons=[
            f"version {version} was found rolled back, version {champion} serving all "
            "traffic: an earlier try of this step analysed it and rolled it back, and logged "
            "no record of it (a try that fails to log prints its records, every reading, to "
            "its log)"
        ],
    )


def rollback_records(
    outcome: dict[str, Any], trigger: dict[str, Any], **options: Any
) -> list[DecisionRecord]:
    """One rollback record per version `variants.roll_back_challengers` rolled back (its
    `rollbacks`), each with the same trigger and `action_record`'s `options`: every version's
    history shows its own."""
    return [action_record(rollback, trigger, **options) for rollback in outcome["rollbacks"]]


def replay_action(kind: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Re-derive a `kind` (promotion or rollback) record's action from its trigger:
    (outcome, reasons).

    Raises:
        DecisionRecordError: an input is missing, or a trigger of a kind or outcome the
            running code does not know.
    """
    try:
        trigger, version = inputs["trigger"], inputs["version"]
        trigger_kind = trigger["kind"]
    except (KeyError, TypeError) as error:
        raise DecisionRecordError(
            f"{kind} record: an input is missing or malformed: {type(error).__name__} {error}"
        ) from None
    if trigger_kind in (MANUAL, UNRECORDED):
        nothing = "manual decision" if trigger_kind == MANUAL else "no analysis on record"
        return {"action": _ACTIONS[kind], "version": version}, [
            f"{nothing}, nothing to re-decide",
            _trigger_text(trigger),
        ]
    analysis = trigger.get("outcome") or {}
    action = ACTION_OF.get(trigger_kind, {}).get(analysis.get("action"))
    if action is None:
        raise DecisionRecordError(
            f"{kind} record: a {trigger_kind!r} analysis with outcome {analysis} leads to no "
            "action this code knows"
        )
    if trigger_kind == "ab" and action == "promote":
        version = analysis.get("winner", version)  # the A/B winner is what is promoted
    return {"action": action, "version": version}, [_trigger_text(trigger)]


def _trigger_text(trigger: dict[str, Any]) -> str:
    kind = trigger.get("kind")
    if kind == MANUAL:
        flags = " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in trigger["flags"].items()
        )
        return f"manual: ctloop {trigger['command']} {flags}, run by {trigger['user']}"
    if kind == UNRECORDED:
        reason = trigger.get("reason") or "no reason given"
        return f"taken by a pipeline step given no analysis record: {reason}"
    return f"{kind} analysis {trigger.get('record_id')}: {trigger.get('outcome')}"


def applied_text(outcome: dict[str, Any]) -> str:
    """What an applied promotion or rollback did, for a message that must say it was done."""
    done = "promoted" if outcome["action"] == _ACTIONS[PROMOTION] else "rolled back"
    versions = outcome["versions"] if "versions" in outcome else [outcome["version"]]
    changes = "; ".join(outcome["changes"]) or "nothing needed changing"
    if len(versions) == 1:
        return f"version {versions[0]} WAS {done} ({changes})"
    return f"versions {', '.join(versions) or '(none)'} WERE {done} ({changes})"
