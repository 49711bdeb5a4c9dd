"""The canary's decision: the policy's checks on both versions' figures, and when to decide.

The checks themselves are `ctloop.components.canary.comparison`. The decision is `promote`
after the bake time with every check passing, `rollback` as soon as a check fails once the
canary has `min_requests`, and `inconclusive` when the bake time is over and the canary has served
fewer (or none at all, whatever `min_requests` says): acted on as `inconclusive` says
(default: roll back, so an unobserved model never takes all traffic; a low-traffic
environment can choose to promote).

Each check is a `ctloop.components.checks.Check`, as the gate's and drift's are: its
`value` is the canary's figure, its `baseline` the primary's, so a reader of one decision can
read the others. The policy's shape is `ctloop.components.canary.policy`, the figures come from
`ctloop.components.canary.measurement`, and `ctloop.components.canary.report` renders the
decision for a person.

On record (`canary_record`), a decision pins every reading it judged, both versions' figures
with their times, beside what the registry and the service said when it began; `replay_canary`
judges those readings again with the running code and any policy, without Prometheus. The
per-interval timeline the report shows is read for a person, not for the decision, and is
not pinned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from ctloop.components.canary.comparison import evaluate
from ctloop.components.canary.measurement import CanaryTarget, Measurement, measure, timeline
from ctloop.components.canary.policy import (
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    CanaryPolicy,
    parse_canary_policy,
)
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.checks import Check, format_number
from ctloop.components.decisions.record import DecisionRecord, DecisionRecordError, new_record

_WAITING = "waiting"
CHAMPION = "champion"
"""The verdict when the version already served all traffic as the champion: nothing to analyse,
so it is promoted (which records where it is served from)."""


@dataclass(frozen=True)
class CanaryDecision:
    """The analysis's verdict, the action it leads to, and everything it rests on."""

    verdict: str
    """`promote`, `rollback` or `inconclusive` (too few canary requests to judge)."""
    action: str
    """`promote` or `rollback`: the verdict, or for `inconclusive` the policy's choice."""
    target: CanaryTarget
    start: float
    end: float
    canary: Measurement
    primary: Measurement
    checks: list[Check]
    """Each check's `value` is the canary's figure, its `baseline` the primary's."""
    reasons: list[str]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    """Every reading judged, in order: its `end` (Unix seconds) and both versions' figures
    (`Measurement.to_json`); the last is the one decided on."""


def observe_canary(
    prometheus: PrometheusClient,
    policy: CanaryPolicy,
    target: CanaryTarget,
    *,
    started_at: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryDecision:
    """Check the canary every `step_s` until the bake time is over or a check fails.

    Args:
        started_at: When the canary began taking traffic (Unix seconds); default now. A
            start longer than the bake time ago decides at once on the whole window.
    """
    start = clock() if started_at is None else started_at
    readings: list[dict[str, Any]] = []
    for now, final in bake_readings(start, policy.bake_time_s, policy.step_s, clock, sleep):
        decision = analyze_window(prometheus, policy, target, start, now, final=final)
        readings += decision.readings
        if decision.verdict != _WAITING:
            return replace(decision, readings=readings)
    raise AssertionError("bake_readings ends only after a final reading")


def bake_readings(
    start: float,
    bake_time_s: float,
    step_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Iterator[tuple[float, bool]]:
    """(now, final) every `step_s` from `start` until the bake time is over, the last with
    final=True: the schedule a canary and a shadow are both judged on. A start longer than
    the bake time ago gives one final reading at once."""
    bake_end = start + bake_time_s
    due = min(start + step_s, bake_end)
    while True:
        now = clock()
        if now < due:
            sleep(due - now)
            now = clock()
        yield now, now >= bake_end
        if now >= bake_end:
            return
        due = min(due + step_s, bake_end)


def analyze_window(
    prometheus: PrometheusClient,
    policy: CanaryPolicy,
    target: CanaryTarget,
    start: float,
    end: float,
    *,
    final: bool = True,
) -> CanaryDecision:
    """The decision on the window from `start` to `end` (Unix seconds).

    With `final=False` (bake time not over) a canary that passes every check is `waiting`;
    a failing one is rolled back at once.
    """
    canary = measure(prometheus, target, target.canary_version, start, end)
    primary = measure(prometheus, target, target.primary_version, start, end)
    verdict, checks, failures = judge(policy, canary, primary, end - start, final=final)
    decision = CanaryDecision(
        verdict=verdict,
        action=policy.inconclusive if verdict == INCONCLUSIVE else verdict,
        target=target,
        start=start,
        end=end,
        canary=canary,
        primary=primary,
        checks=checks,
        reasons=failures,
        readings=[{"end": end, "canary": canary.to_json(), "primary": primary.to_json()}],
    )
    if verdict == _WAITING:
        return decision
    return replace(decision, timeline=timeline(prometheus, target, start, end, policy.step_s))


def judge(
    policy: CanaryPolicy,
    canary: Measurement,
    primary: Measurement,
    seconds: float,
    *,
    final: bool = True,
) -> tuple[str, list[Check], list[str]]:
    """(verdict, checks, failures) of one reading `seconds` after the start; `final`: the bake
    time is over. Before it is, a reading that fails nothing is `waiting`."""
    checks = evaluate(policy, canary, primary)
    failures = [check.rule for check in checks if not check.passed]
    if canary.requests < max(policy.min_requests, 1e-9):
        failures = [
            f"the canary served {format_number(canary.requests)} requests in {seconds:.0f} s, "
            f"fewer than min_requests {format_number(policy.min_requests)}: too few to judge"
        ]
        return (INCONCLUSIVE if final else _WAITING), checks, failures
    if failures:
        return ROLLBACK, checks, failures
    return (PROMOTE if final else _WAITING), checks, []


def canary_record(
    decision: CanaryDecision | None,
    *,
    version: str,
    champion: str | None,
    serving_canary: str | None,
    policy_text: str,
    registered_model: str = "",
    kfp_run_id: str = "",
) -> DecisionRecord:
    """The record of the analysis of canary `version`: `champion` (the registry's) and
    `serving_canary` (the version the service served as its canary, None when one version
    took all traffic) as found before it began, and every reading of `decision` (None: the
    version already served all traffic as the champion, so nothing was analysed)."""
    inputs: dict[str, Any] = {
        "version": version,
        "champion": champion,
        "serving_canary": serving_canary,
        "target": None,
        "start": None,
        "readings": [],
    }
    if decision is None:
        outcome, reasons = _champion_outcome(version)
    else:
        inputs.update(
            target=asdict(decision.target), start=decision.start, readings=decision.readings
        )
        outcome = {"verdict": decision.verdict, "action": decision.action}
        reasons = record_reasons(decision.verdict, decision.checks, decision.reasons)
    return new_record(
        "canary",
        subject={
            "registered_model": registered_model,
            "model_version": version,
            "kfp_run_id": kfp_run_id,
        },
        inputs=inputs,
        policy=policy_text,
        outcome=outcome,
        reasons=reasons,
    )


def replay_canary(inputs: dict[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Judge a canary record's pinned readings again, in order, with `policy` (a policy text;
    blank: the running code's default) and no Prometheus: (outcome, reasons).

    A reading is final when it ends at least the policy's bake time after the start, so a
    policy with a longer bake time than the recorded one may find no final reading: the
    outcome is then `waiting` (the analysis would still be watching). A policy with another
    `step_s` is judged on the recorded readings, not on a schedule of its own.

    Raises:
        CanaryPolicyError: `policy` is not a canary policy.
        DecisionRecordError: an input is missing or malformed.
    """
    parsed = parse_canary_policy(policy)
    try:
        version, champion, serving = (inputs[k] for k in ("version", "champion", "serving_canary"))
        start = float(inputs["start"]) if inputs["start"] is not None else None
        readings = [
            (
                float(reading["end"]),
                Measurement.from_json(reading["canary"]),
                Measurement.from_json(reading["primary"]),
            )
            for reading in inputs["readings"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DecisionRecordError(
            f"canary record: an input is missing or malformed: {type(error).__name__} {error}"
        ) from None
    if serving != version:
        if champion == version:
            return _champion_outcome(version)
        raise DecisionRecordError(
            f"canary record: version {version} was neither the service's canary ({serving}) "
            f"nor the champion ({champion}): no decision was taken"
        )
    if start is None or not readings:
        raise DecisionRecordError("canary record: an analysed canary with no start or readings")
    judged = [
        (end, partial(judge, parsed, canary, primary, end - start))
        for end, canary, primary in readings
    ]
    return rejudge(start, judged, parsed.bake_time_s, parsed.inconclusive)


Judgement = Callable[..., tuple[str, list[Check], list[str]]]
"""One pinned reading's judge: called with `final=`, gives (verdict, checks, reasons)."""


def rejudge(
    start: float, readings: list[tuple[float, Judgement]], bake_time_s: float, inconclusive: str
) -> tuple[dict[str, Any], list[str]]:
    """The outcome of pinned readings judged again in order (a canary's or a shadow's): each
    (end, judge) is final when it ends `bake_time_s` or more after `start`; the first that is
    not `waiting` decides, its inconclusive verdict acted on as `inconclusive` says. When none
    decides (a longer bake time than the readings cover), the outcome is `waiting`."""
    for end, judge_reading in readings:
        verdict, checks, reasons = judge_reading(final=end >= start + bake_time_s)
        if verdict != _WAITING:
            action = inconclusive if verdict == INCONCLUSIVE else verdict
            return {"verdict": verdict, "action": action}, record_reasons(verdict, checks, reasons)
    last = readings[-1][0] - start
    return {"verdict": _WAITING, "action": _WAITING}, [
        f"the readings end {last:.0f} s after the start, before the bake time of "
        f"{bake_time_s:g} s, and decide nothing: the analysis would still be watching"
    ]


def _champion_outcome(version: str) -> tuple[dict[str, Any], list[str]]:
    return {"verdict": CHAMPION, "action": PROMOTE}, [
        f"version {version} already served all traffic as the champion: no canary to analyse"
    ]


def record_reasons(verdict: str, checks: list[Check], failures: list[str]) -> list[str]:
    """Why, for a record (a canary's or a shadow's): the failures, or every check that
    passed."""
    if failures:
        return failures
    return [f"{verdict}: every check passed at the end of the bake time"] + [
        check.rule for check in checks
    ]
