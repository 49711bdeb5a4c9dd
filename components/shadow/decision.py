"""The shadow's decision: the policy's checks on the paired figures, and when to decide.

Checks, each a `ctloop.components.checks.Check` whose `value` is the shadow's figure: the
disagreement rate and the mean absolute score difference (per row compared), the error rate
(of the rows given to the shadow) and, when the policy sets it, the skipped fraction (of the
rows served). A figure with no rows under it fails its check: a renamed metric must not turn a
check off silently.

When to decide, as the canary does: the figures are read every `step_s` from the start of the
analysis. A failing check rejects the shadow at once, but only once enough rows stand behind
it (`min_rows` compared; for the error rate, `min_rows` given to the shadow, so a shadow that
fails on every row, and so compares none, is still rejected rather than left inconclusive).
Going on needs the whole bake time: passing early is not final, because the traffic's mix
changes over the day and the comparison should see it. After the bake time, fewer than
`min_rows` compared (or none at all, whatever `min_rows` says) is `inconclusive`, acted on as
the policy's `inconclusive` says (default: reject, so an unobserved model never reaches a
canary). A bake time of 0 decides on the first reading: how a laptop run that has already
replayed its traffic asks for a decision now.

On record (`shadow_record`), a decision pins every reading it judged (its time and the figures
read then); `replay_shadow` judges those readings again with the running code and any policy,
reading neither Prometheus nor a predictor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from ctloop.components.canary.decision import bake_readings, record_reasons, rejudge
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.checks import Check, format_number, limit_check
from ctloop.components.decisions.record import DecisionRecord, DecisionRecordError, new_record
from ctloop.components.shadow.measurement import (
    ShadowFigures,
    ShadowTarget,
    check_http_url,
    measure,
    metrics_text_figures,
    read_metrics_endpoint,
)
from ctloop.components.shadow.policy import (
    GO_ON,
    INCONCLUSIVE,
    REJECT,
    ShadowPolicy,
    parse_shadow_policy,
)

WAITING = "waiting"
"""The verdict of a reading before the bake time is over that rejects nothing."""

FigureReader = Callable[[float, float], ShadowFigures]
"""Reads the figures of the window from its start to its end (Unix seconds)."""


@dataclass(frozen=True)
class ShadowDecision:
    """The analysis's verdict, the action it leads to, and everything it rests on."""

    verdict: str
    """`go_on`, `reject` or `inconclusive` (too few compared rows to judge)."""
    action: str
    """`go_on` or `reject`: the verdict, or for `inconclusive` the policy's choice."""
    target: ShadowTarget
    source: str
    """Where the figures came from (a Prometheus or a predictor's /metrics URL)."""
    start: float
    end: float
    figures: ShadowFigures
    checks: list[Check]
    reasons: list[str]
    readings: list[dict[str, Any]] = field(default_factory=list)
    """Every reading judged, in order: its `end` (Unix seconds) and `figures` (the
    `ShadowFigures` fields); the last is the one decided on."""

    @property
    def go_on(self) -> bool:
        """True when the rollout goes on to a canary."""
        return self.action == GO_ON

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON: verdict, action, go_on, reasons, every figure and check."""
        figures = self.figures
        return {
            "go_on": self.go_on,
            "verdict": self.verdict,
            "action": self.action,
            "reasons": self.reasons,
            "figures": {
                **asdict(figures),
                "disagreement_rate": figures.disagreement_rate,
                "error_rate": figures.error_rate,
                "skipped_fraction": figures.skipped_fraction,
            },
            "checks": [check.to_json() for check in self.checks],
            "source": self.source,
            "start": self.start,
            "end": self.end,
        }


def run_shadow_analysis(
    policy: ShadowPolicy,
    target: ShadowTarget,
    *,
    prometheus_url: str = "",
    metrics_url: str = "",
    started_at: float | None = None,
    timeout_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ShadowDecision:
    """Observe the shadow from one source until the policy decides.

    Args:
        prometheus_url: A Prometheus that scrapes the predictors (a cluster).
        metrics_url: One predictor's /metrics page instead (a laptop); its totals since it
            started are the figures. Exactly one of the two.
        started_at: When the shadow began scoring (Unix seconds); default now. A start longer
            than the bake time ago decides at once on the whole window.
        timeout_s: Seconds each request to the source may take.

    Raises:
        ValueError: not exactly one source, or a source URL that is not http(s).
        RuntimeError: the source could not be read (`PrometheusError`,
            `MetricsEndpointError`).
    """
    if bool(prometheus_url) == bool(metrics_url):
        raise ValueError("give exactly one source: a Prometheus URL or a predictor's metrics URL")
    timing = {"started_at": started_at, "clock": clock, "sleep": sleep}
    if prometheus_url:
        prometheus = PrometheusClient(prometheus_url, timeout_s=timeout_s)
        return observe_shadow(
            lambda start, end: measure(prometheus, target, start, end),
            policy,
            target,
            source=f"Prometheus {prometheus.url}",
            **timing,
        )
    check_http_url(metrics_url, "metrics URL")  # before any wait
    found = [target]  # with the labels the page shows, for the report

    def read(start: float, end: float) -> ShadowFigures:
        text = read_metrics_endpoint(metrics_url, timeout_s=timeout_s)
        figures, found[0] = metrics_text_figures(text, target, where=metrics_url)
        return figures

    decision = observe_shadow(read, policy, target, source=metrics_url, **timing)
    return replace(decision, target=found[0])


def observe_shadow(
    read: FigureReader,
    policy: ShadowPolicy,
    target: ShadowTarget,
    *,
    source: str = "",
    started_at: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ShadowDecision:
    """Read the figures every `step_s` until the bake time is over or a check rejects."""
    start = clock() if started_at is None else started_at
    readings: list[dict[str, Any]] = []
    for now, final in bake_readings(start, policy.bake_time_s, policy.step_s, clock, sleep):
        figures = read(start, now)
        readings.append({"end": now, "figures": asdict(figures)})
        decision = decide(policy, figures, final=final)
        if decision[0] != WAITING:
            verdict, checks, reasons = decision
            return ShadowDecision(
                verdict=verdict,
                action=policy.inconclusive if verdict == INCONCLUSIVE else verdict,
                target=target,
                source=source,
                start=start,
                end=now,
                figures=figures,
                checks=checks,
                reasons=reasons,
                readings=readings,
            )
    raise AssertionError("bake_readings ends only after a final reading")


def shadow_record(
    decision: ShadowDecision,
    *,
    policy_text: str,
    registered_model: str = "",
    kfp_run_id: str = "",
) -> DecisionRecord:
    """The record of `decision`: every reading it judged, whose figures they were and where
    they were read from, the policy text as given, the verdict and the action."""
    return new_record(
        "shadow",
        subject={
            "registered_model": registered_model,
            "model_version": decision.target.shadow_version,
            "kfp_run_id": kfp_run_id,
        },
        inputs={
            "target": asdict(decision.target),
            "source": decision.source,
            "start": decision.start,
            "readings": decision.readings,
        },
        policy=policy_text,
        outcome={"verdict": decision.verdict, "action": decision.action},
        reasons=record_reasons(decision.verdict, decision.checks, decision.reasons),
    )


def replay_shadow(inputs: dict[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Judge a shadow record's pinned readings again, in order, with `policy` (a policy text;
    blank: the running code's default): (outcome, reasons).

    A reading is final when it ends at least the policy's bake time after the start; when a
    longer bake time than the recorded one leaves no final reading and nothing rejects, the
    outcome is `waiting` (the analysis would still be watching).

    Raises:
        ShadowPolicyError: `policy` is not a shadow policy.
        DecisionRecordError: an input is missing or malformed.
    """
    parsed = parse_shadow_policy(policy)
    try:
        start = float(inputs["start"])
        readings = [
            (float(reading["end"]), ShadowFigures(**reading["figures"]))
            for reading in inputs["readings"]
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise DecisionRecordError(
            f"shadow record: an input is missing or malformed: {type(error).__name__} {error}"
        ) from None
    if not readings:
        raise DecisionRecordError("shadow record: no reading to judge")
    judged = [(end, partial(decide, parsed, figures)) for end, figures in readings]
    return rejudge(start, judged, parsed.bake_time_s, parsed.inconclusive)


def decide(
    policy: ShadowPolicy, figures: ShadowFigures, *, final: bool = True
) -> tuple[str, list[Check], list[str]]:
    """(verdict, checks, reasons) for one reading; `final`: the bake time is over.

    Before the bake time is over a reading that rejects nothing is `waiting`.
    """
    need = max(policy.min_rows, 1.0)
    checks = evaluate(policy, figures)
    rows_behind = {
        "max_error_rate": figures.given,
        "max_skipped_fraction": figures.served,
    }
    judged = [
        check.rule
        for check in checks
        if not check.passed and rows_behind.get(check.kind, figures.compared) >= need
    ]
    if judged:
        return REJECT, checks, judged
    if figures.compared < need:
        reason = (
            f"the shadow compared {format_number(figures.compared)} rows, fewer than min_rows "
            f"{format_number(policy.min_rows)}: too few to judge"
        )
        return (INCONCLUSIVE if final else WAITING), checks, [reason]
    return (GO_ON if final else WAITING), checks, []


def evaluate(policy: ShadowPolicy, figures: ShadowFigures) -> list[Check]:
    """Every check the policy asks for (a `max_*` that is not null), on the figures."""
    asked = [
        ("max_disagreement_rate", "disagreement_rate", figures.disagreement_rate, "compared"),
        ("max_mean_abs_difference", "mean_abs_difference", figures.mean_abs_difference, "compared"),
        ("max_error_rate", "error_rate", figures.error_rate, "given to the shadow"),
        ("max_skipped_fraction", "skipped_fraction", figures.skipped_fraction, "served"),
    ]
    checks = []
    for key, figure, value, rows in asked:
        limit = getattr(policy, key)
        if limit is None:
            continue
        if value is None:
            rule = f"no row {rows} in the window: the shadow's {figure} is unknown"
            checks.append(Check(key, figure, None, limit, rule, passed=False))
        else:
            checks.append(limit_check(key, figure, value, limit, limit_name="max"))
    return checks
