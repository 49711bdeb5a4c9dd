"""The demo's rollout: shadow, canary with promotion, and a broken canary rolled back.

After the demo's training and monitoring runs the registry holds a champion and a retrained
challenger, and the rendered InferenceService serves the challenger as a canary. Here the
rollout is played on loopback with real processes and decided by the project's own analysis:

1. Shadow: one predictor serves the champion with the challenger as its shadow; a production
   window is replayed through it, and the shadow analysis decides from that predictor's
   /metrics (no Prometheus needed) whether the two agree closely enough to go on.
2. Canary: champion and challenger as two predictors, `local_router` in front giving the
   challenger the deploy step's canary percent, a real Prometheus (`local_prometheus`)
   scraping both; the canary analysis decides from Prometheus while the window is replayed,
   and the decision is carried out as on a cluster: MLflow's `champion` alias moves (or the
   version is tagged rolled back) and the InferenceService is rendered again, through the
   deploy step's own rendering, serving one version.
3. A broken challenger (`demo_models`: it needs a feature callers do not send, so every
   request it gets is refused with a 400) goes straight to a canary, as the `canary`
   strategy does, and is rolled back.

The policies are the pipelines' defaults with a demo's bake times (seconds, not minutes),
widened where a few hundred requests on a shared laptop call for it: `SHADOW_POLICY` and
`CANARY_POLICY` say where and why.
Without the `prometheus` binary the canary stages are skipped, saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ctloop.components.canary.decision import CanaryDecision, canary_record, observe_canary
from ctloop.components.canary.measurement import CanaryTarget
from ctloop.components.canary.policy import PROMOTE, parse_canary_policy
from ctloop.components.canary.promotion_record import action_record, analysis_trigger
from ctloop.components.canary.report import decision_markdown as canary_markdown
from ctloop.components.decisions.store import log_record
from ctloop.components.deploy import rollout
from ctloop.components.deploy.inference_service import storage_uri_for
from ctloop.components.deploy.serving_capacity import ServingCapacity
from ctloop.components.registry import mlflow_registry
from ctloop.components.shadow.decision import ShadowDecision, run_shadow_analysis, shadow_record
from ctloop.components.shadow.measurement import (
    ShadowTarget,
    metrics_text_figures,
    read_metrics_endpoint,
)
from ctloop.components.shadow.policy import parse_shadow_policy
from ctloop.components.shadow.report import decision_markdown as shadow_markdown
from ctloop.pipelines import local_prometheus
from ctloop.pipelines.demo_models import REASON, Registry, register_broken_challenger
from ctloop.pipelines.demo_traffic import (
    Predictor,
    replay_bodies,
    send_all,
    send_until,
    start_predictors,
    start_servers,
    wait_for,
    warm_up,
)
from ctloop.pipelines.local_router import CANARY, running_router
from ctloop.serving.local_server import LOOPBACK, free_port, server_command

SHADOW_POLICY = {
    "min_rows": 500,
    "max_disagreement_rate": 0.2,
    "max_mean_abs_difference": 0.1,
    "max_error_rate": 0.0,
    "bake_time_s": 0,
}
"""Decided on one reading of a window already replayed. The window is the drifted one the
challenger was retrained for, where it is meant to answer differently (about 14 % of labels
and 0.075 of score on average, against 4 % and 0.03 on the steady window), so the bounds are
wider than the pipelines' defaults (2 %, 0.05): they stop a challenger that answers unlike
any retrained model would (one scoring at random disagrees on about half the labels), and
any shadow error."""
CANARY_POLICY = {
    "bake_time_s": 30,
    "step_s": 5,
    "min_requests": 25,
    "error_rate": {"max_increase": 0.01},
    "latency_p99_ms": {"max": 250},
    "score_shift": {"psi_max": 0.2},
}
"""The default checks over a 30 s bake, but for latency: a ceiling instead of the default's
"at most 1.5 times the primary's p99". The canary serves a few dozen requests here, so its
p99 is its slowest one, and on a laptop shared with Prometheus, the replay and whatever else
runs, one stalled request makes it several times the primary's (20.7 ms against 5.8 ms, for
two models of the same size, in one run)."""


@dataclass(frozen=True)
class Version:
    """A registered version as the demo serves it: its model folder, and the deploy step's
    request, which renders the InferenceService serving it."""

    version: str
    model_dir: Path
    request: rollout.RolloutRequest


def version_of(summary: dict) -> Version:
    """The version a training run registered and rendered, from the run's summary."""
    deployment = summary["deployment"]
    known = {field.name for field in fields(rollout.RolloutRequest)}
    arguments = {key: value for key, value in deployment.items() if key in known}
    arguments["capacity"] = ServingCapacity(**(deployment.get("capacity") or {}))
    request = rollout.RolloutRequest(**arguments)
    return Version(str(summary["model_version"]), Path(request.model_artifact_uri), request)


@dataclass(frozen=True)
class Stage:
    """What one stage decided, why, and where its report is."""

    title: str
    verdict: str
    reasons: list[str]
    report: Path | None = None


class Rollout:
    """Stages of one registered model's rollout, their logs and reports under `root`."""

    def __init__(self, root: Path, tracking_uri: str, registered_model: str, render_dir: Path):
        self.root = root
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        self.render_dir = render_dir
        root.mkdir(parents=True, exist_ok=True)

    def shadow(self, champion: Version, challenger: Version, window: Path) -> Stage:
        """Serve the champion with the challenger as its shadow, replay `window`, decide."""
        name, port = champion.request.name, free_port()
        shadow = ["--shadow-model-uri", str(challenger.model_dir)]
        shadow += ["--shadow-version", challenger.version]
        command = server_command(champion.model_dir, name, port, champion.version, shadow)
        commands = {f"shadow-v{champion.version}-v{challenger.version}": (command, port)}
        target = ShadowTarget(name, challenger.version, champion.version)
        bodies, rows = replay_bodies(window, champion.model_dir)
        with ExitStack() as stack:
            [url] = start_servers(stack, commands, self.root).values()
            started = time.time()
            send_all(f"{url}/v1/models/{name}:predict", bodies)
            metrics_url = f"{url}/metrics"
            wait_for(  # the shadow scores off the request path: until it has seen every row
                lambda: (
                    metrics_text_figures(read_metrics_endpoint(metrics_url), target)[0].served
                    >= rows
                ),
                f"the shadow's figures of {rows} rows at {metrics_url}",
            )
            policy = parse_shadow_policy(json.dumps(SHADOW_POLICY))
            decision = run_shadow_analysis(
                policy, target, metrics_url=metrics_url, started_at=started
            )
        record = shadow_record(
            decision, policy_text=json.dumps(SHADOW_POLICY), registered_model=self.registered_model
        )
        log_record(self.tracking_uri, record)
        return Stage(
            f"shadow: v{challenger.version} scored the {rows} rows of {window.name} that "
            f"v{champion.version} answered",
            "go on to a canary" if decision.go_on else "reject",
            [_figures(decision, "champion")],
            self._report(f"shadow-v{challenger.version}.md", shadow_markdown(decision)),
        )

    def canary(
        self,
        primary: Version,
        canary: Version,
        window: Path,
        prometheus: local_prometheus.LocalPrometheus,
        urls: dict[str, str],
    ) -> Stage:
        """Split the replayed `window` between the two running predictors (`urls` by
        version) at the canary's percent, decide from `prometheus`, carry it out."""
        percent = canary.request.canary_percent
        name, namespace = primary.request.name, primary.request.namespace
        target = CanaryTarget(name, canary.version, primary.version, namespace)
        bodies, _rows = replay_bodies(window, primary.model_dir)
        path = f"/v1/models/{name}:predict"
        answer = warm_up(
            prometheus, target, [urls[v.version] + path for v in (primary, canary)], bodies[0]
        )
        policy = parse_canary_policy(json.dumps(CANARY_POLICY))
        done = threading.Event()
        with running_router(urls[primary.version], urls[canary.version], percent) as router:
            sender = threading.Thread(target=send_until, args=(router.url + path, bodies, done))
            sender.start()
            try:
                decision = observe_canary(prometheus, policy, target, started_at=time.time())
            finally:
                done.set()
                sender.join()
        if decision.action == PROMOTE:
            storage_uri = storage_uri_for(canary.request.model_artifact_uri)
            mlflow_registry.promote_to_champion(
                self.tracking_uri, self.registered_model, canary.version, storage_uri=storage_uri
            )
            served, outcome = canary, "promoted"
        else:
            mlflow_registry.record_rollback(
                self.tracking_uri, self.registered_model, canary.version, decision.reasons
            )
            served, outcome = primary, f"tagged {mlflow_registry.ROLLED_BACK_TAG}"
        self.render_serving_only(served.request)
        champion = mlflow_registry.version_with_alias(self.tracking_uri, self.registered_model)
        self._record_canary(decision, primary, canary, champion, outcome, served)
        counts = router.split.counts
        why = [_figures(decision, f"v{primary.version}")]
        if answer is not None:
            why.append(f"v{canary.version} answers {answer}")
        return Stage(
            f"canary: v{canary.version} took {counts[CANARY]} of {sum(counts.values())} "
            f"requests ({percent} %), v{primary.version} the rest",
            f"{decision.action} after {decision.end - decision.start:.0f} s",
            [
                *why,
                f"v{canary.version} {outcome}; MLflow's {mlflow_registry.CHAMPION} is "
                f"v{champion}; the rendered InferenceService serves v{served.version} only",
            ],
            self._report(f"canary-v{canary.version}.md", canary_markdown(decision)),
        )

    def _record_canary(
        self,
        decision: CanaryDecision,
        primary: Version,
        canary: Version,
        champion: str | None,
        registry_change: str,
        served: Version,
    ) -> None:
        """Log the canary analysis and the promotion or rollback it led to, as the pipeline's
        canary analysis step does, so `ctloop audit` and `ctloop replay` see the demo's."""
        analysis = canary_record(
            decision,
            version=canary.version,
            champion=primary.version,
            serving_canary=canary.version,
            policy_text=json.dumps(CANARY_POLICY),
            registered_model=self.registered_model,
        )
        carried_out = {
            "action": decision.action,
            "version": canary.version,
            "inference_service": f"{primary.request.namespace}/{primary.request.name}",
            "deployment_mode": primary.request.deployment_mode,
            "before": {"champion": primary.version, "canary": canary.version},
            "after": {"champion": champion, "canary": None},
            "changes": [
                f"MLflow: v{canary.version} {registry_change}",
                f"the rendered InferenceService serves v{served.version} only",
            ],
        }
        action = action_record(
            carried_out,
            analysis_trigger(analysis),
            reasons=decision.reasons,
            registered_model=self.registered_model,
        )
        for record in (analysis, action):
            log_record(self.tracking_uri, record)

    def render_canary(self, primary: Version, version: str, model_dir: Path) -> Version:
        """Render `version` as the canary of the service serving `primary`, at the deploy
        step's canary percent; returns it with the request that rendered it."""
        request = replace(primary.request, model_artifact_uri=str(model_dir), model_version=version)
        rollout.render(request, str(self.render_dir))
        return Version(version, model_dir, request)

    def render_serving_only(self, request: rollout.RolloutRequest) -> Path:
        """Render the InferenceService as promotion or rollback leaves it: `request`'s version
        takes all traffic. Rendered afresh (validated against the CRD when present) beside
        the current manifest, which it then replaces: a refused manifest replaces nothing."""
        path = self.render_dir / request.namespace / f"{request.name}.yaml"
        with tempfile.TemporaryDirectory(dir=self.render_dir) as scratch:
            rendered = rollout.render(replace(request, canary_percent=100), scratch)
            os.replace(rendered["inference_service_manifest"], path)
        return path

    def _report(self, name: str, markdown: str) -> Path:
        path = self.root / name
        path.write_text(markdown)
        return path


def run_rollout(
    root: Path,
    registry: Registry,
    render_dir: Path,
    summaries: list[dict],
    window: Path,
    history: Path,
    target: str,
    say: Callable[[str], None] = print,
) -> list[Stage]:
    """The three stages on the registry's champion and challenger, which `summaries` (the
    demo's training runs) registered and rendered; logs and reports under `root` (a previous
    run's are removed first); `say` announces each stage as it starts. Returns what each
    stage decided (nothing when these runs registered no champion and challenger)."""
    registered = {str(s["model_version"]): s for s in summaries if s and s.get("model_version")}
    champion = mlflow_registry.version_with_alias(registry.tracking_uri, registry.model)
    challenger = mlflow_registry.version_with_alias(
        registry.tracking_uri, registry.model, mlflow_registry.CHALLENGER
    )
    if champion not in registered or challenger not in registered:
        return []
    champion, challenger = version_of(registered[champion]), version_of(registered[challenger])
    shutil.rmtree(root, ignore_errors=True)
    steps = Rollout(root, registry.tracking_uri, registry.model, render_dir)
    say(f"\n== rollout 1: shadow, v{challenger.version} beside the champion v{champion.version}")
    stages = [steps.shadow(champion, challenger, window)]
    if not stages[0].verdict.startswith("go on"):
        why = [f"the shadow stage rejected v{challenger.version}: it never takes traffic"]
        return [*stages, Stage("canary stages", "skipped", why)]
    if not local_prometheus.installed():
        why = [
            f"no prometheus binary to watch a canary; to get it: {local_prometheus.INSTALL_HINT}"
        ]
        say(f"== rollout 2 and 3: canary stages skipped: {why[0]}")
        return [*stages, Stage("canary stages", "skipped", why)]
    say(f"== rollout 2: canary, v{challenger.version} behind a local router, Prometheus watching")
    ports = [free_port() for _version in ("champion", "challenger", "broken")]
    with ExitStack() as stack:
        prometheus = stack.enter_context(
            local_prometheus.running_prometheus(
                [f"{LOOPBACK}:{port}" for port in ports],
                root / "prometheus",
                labels={"namespace": champion.request.namespace},
            )
        )
        urls = start_predictors(
            stack, [_serving(champion, ports[0]), _serving(challenger, ports[1])], root
        )
        stages.append(steps.canary(champion, challenger, window, prometheus, urls))
        served = challenger if stages[-1].verdict.startswith(PROMOTE) else champion
        say(f"== rollout 3: a broken challenger ({REASON}) as a canary beside v{served.version}")
        folder = root / "broken-challenger"
        folder.mkdir(exist_ok=True)
        # Training and MLflow talk at length (as the pipelines' steps do, into their logs).
        with (
            open(folder / "training.log", "w") as log,
            redirect_stdout(log),
            redirect_stderr(log),
        ):
            version, model_dir = register_broken_challenger(history, target, folder, registry)
        broken = steps.render_canary(served, version, model_dir)
        urls.update(start_predictors(stack, [_serving(broken, ports[2])], root))
        stages.append(steps.canary(served, broken, window, prometheus, urls))
    return stages


def _serving(version: Version, port: int) -> Predictor:
    return Predictor(version.model_dir, version.request.name, version.version, port)


def _figures(decision: ShadowDecision | CanaryDecision, baseline: str) -> str:
    """Why, in a line: the failed checks' figures, or the reason a decision without one
    gives (too few rows or requests), or every applied check's figure. Each figure comes
    with the `baseline`'s (the champion's or the primary's) when it has one, and its limit."""
    measured = [check for check in decision.checks if isinstance(check.value, int | float)]
    failed = [check for check in measured if not check.passed]
    if not failed and decision.reasons:
        return "; ".join(decision.reasons)
    parts = []
    for check in failed or [check for check in measured if not check.skipped]:
        shown = [f"{baseline} {check.baseline:.3g}"] if check.baseline is not None else []
        shown.append(f"limit {check.threshold:.3g}")
        parts.append(f"{check.subject} {check.value:.3g} ({', '.join(shown)})")
    return "; ".join(parts)


def describe_stages(stages: list[Stage]) -> str:
    """Each stage's decision on a line, then why and what it changed, indented."""
    lines = []
    for stage in stages:
        lines.append(f"  {stage.title}: {stage.verdict}")
        lines += [f"    {reason}" for reason in stage.reasons]
    return "\n".join(lines)
