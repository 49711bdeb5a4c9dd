"""`make demo`: the whole loop end to end on this machine, on a real public dataset.

On the Telco customer churn history (`demo_data`), the demo trains twice: the first model
passes the gate and is deployed at 100 %; the second, with other hyperparameters, is compared
with that champion on the same test rows and, if the gate passes it, rendered as a canary.
The champion is then served on loopback by ctloop's KServe predictor, which answers a few
rows over v1 and v2. Last, the monitoring pipeline checks two production windows against the
champion: a steady one (no drift, nothing happens) and one of seniors, a population the
champion barely saw, which drifts and retrains through the same gate and canary. The rollout
of that retrained challenger follows on loopback (`demo_rollout`): a shadow stage, a canary
behind a local router watched by a real Prometheus, promoted, and a broken challenger rolled
back; the demo's last lines say what each stage decided and why.

A person follows it in the terminal: each pipeline run shows one line per task and then what
it decided, while kfp.local's whole output (thousands of lines of task logs) goes to a file a
run under the work directory's `logs/`, named before the run starts. A failing task shows the
end of its output in the terminal too, the rest being in that file.
"""

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from ctloop.components.decisions.store import records_for
from ctloop.pipelines.compiler import compile_all
from ctloop.pipelines.demo_data import demo_tables, export_telco_churn
from ctloop.pipelines.demo_models import Registry
from ctloop.pipelines.demo_rollout import describe_stages, run_rollout
from ctloop.pipelines.local_logs import LocalRunError
from ctloop.pipelines.local_run import Workdir, run_monitoring_pipeline, run_training_pipeline
from ctloop.pipelines.replay import SAME, replay
from ctloop.serving.local_server import free_port, running_server, server_command

TARGET = "churn"
SECOND_HYPERPARAMETERS = '{"max_depth": 3, "eta": 0.05, "num_boost_round": 800}'
SERVED_NAME = "ctloop-model"
EXPERIMENT = "ctloop"
"""The training pipeline's default MLflow experiment, which the demo's runs use."""
SERVED_ROWS = 3
REQUEST_TIMEOUT_S = 30.0


@contextmanager
def _run_log(work: Workdir, log_name: str, title: str) -> Iterator[dict]:
    """Announce a local pipeline run; yield the `run_training_pipeline` /
    `run_monitoring_pipeline` arguments that send its whole output to `logs/<log_name>.log` and
    one line per task to stdout."""
    log_path = work.logs / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n== {title}\n   log: {log_path}", flush=True)
    with log_path.open("w") as log:
        try:
            yield {"log_stream": log, "console": sys.stdout}
        except LocalRunError:
            print(f"   the whole log: {log_path}", flush=True)
            raise


def _describe(summary: dict) -> str:
    metrics = summary["metrics"]
    lines = [
        f"   test roc_auc {metrics.get('roc_auc', float('nan')):.4f}  "
        f"log_loss {metrics.get('log_loss', float('nan')):.4f}",
        f"   gate: {'passed' if summary['gate_passed'] else 'failed'}",
    ]
    lines += [f"     - {failure['rule']}" for failure in summary["gate_failures"]]
    deployment = summary["deployment"]
    if summary["model_version"]:
        canary = deployment.get("canary_traffic_percent")
        traffic = f"canary at {canary}%" if canary not in (None, 100) else "100% of traffic"
        lines.append(
            f"   registered {summary['registered_model']} v{summary['model_version']} "
            f"@{summary['alias']}; InferenceService {deployment['action']}: {traffic}"
        )
    return "\n".join(lines)


def ask_served_model(
    model_uri: str,
    version: str,
    data: Path,
    rows: int = SERVED_ROWS,
    name: str = SERVED_NAME,
    output_path: Path | None = None,
) -> dict:
    """Serve `model_uri` on a free loopback port, score `rows` rows of `data`, stop the server.

    The rows go once as a v1 request (feature-keyed objects, labels asked for) and once as a
    v2 request (one tensor per feature). Returns the rows, both answers and the server URL.
    The server's output is kept at `output_path` when given.

    Raises:
        ServerStartError: the server did not start (the message carries its output).
        RuntimeError: a request failed, timed out or was answered with an error.
    """
    port = free_port()
    command = server_command(model_uri, name, port, version)
    with running_server(command, port, output_path=output_path) as server:
        # The v2 metadata lists one input per feature, in order, BYTES for categorical ones.
        metadata = _call("GET", f"{server.url}/v2/models/{name}")
        features = [tensor["name"] for tensor in metadata["inputs"]]
        kinds = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
        complete = [
            row
            for row in pq.read_table(data).slice(0, 50).to_pylist()
            if all(row[feature] is not None for feature in features)
        ][:rows]
        instances = [{feature: row[feature] for feature in features} for row in complete]
        v1 = _call(
            "POST",
            f"{server.url}/v1/models/{name}:predict",
            {"instances": instances, "return_labels": True},
        )
        inputs = [
            {
                "name": feature,
                "shape": [len(instances)],
                "datatype": kinds[feature],
                "data": [instance[feature] for instance in instances],
            }
            for feature in features
        ]
        v2 = _call("POST", f"{server.url}/v2/models/{name}/infer", {"id": "demo", "inputs": inputs})
    return {"url": server.url, "name": name, "rows": complete, "v1": v1, "v2": v2}


def _call(method: str, url: str, body: dict | None = None) -> dict:
    """One request to the served model; a failure is a RuntimeError quoting the answer."""
    try:
        answer = httpx.request(method, url, json=body, timeout=REQUEST_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise RuntimeError(f"{method} {url}: {error!r}") from error
    if answer.status_code != 200:
        raise RuntimeError(f"{method} {url}: HTTP {answer.status_code}: {answer.text[:2000]}")
    return answer.json()


def _describe_serving(title: str, answers: dict) -> str:
    name, v1, v2 = answers["name"], answers["v1"], answers["v2"]
    outputs = {output["name"]: output["data"] for output in v2["outputs"]}
    lines = [
        f"\n== {title}: {name} on {answers['url']} (ctloop's KServe predictor)",
        f"   v1 POST /v1/models/{name}:predict, rows as feature-keyed objects "
        f"(model_version {v1['model_version']}):",
    ]
    for index, (row, score, label) in enumerate(
        zip(answers["rows"], v1["predictions"], v1["labels"], strict=True)
    ):
        lines.append(
            f"     row {index}: P({TARGET}) {score:.3f}  label {label}  (actual: {row[TARGET]})"
        )
    lines += [
        f"   v2 POST /v2/models/{name}/infer, one tensor per feature "
        f"(model_version {v2['model_version']}):",
        "     probabilities "
        + ", ".join(f"{score:.3f}" for score in outputs["probabilities"])
        + f"  labels {outputs['labels']}",
        "   server stopped",
    ]
    return "\n".join(lines)


def latest_champion(*summaries: dict) -> dict | None:
    """The latest run whose model holds the champion alias (None when no gate passed)."""
    return next(
        (summary for summary in reversed(summaries) if summary["alias"] == "champion"), None
    )


def _describe_monitoring(summary: dict) -> str:
    lines = [
        f"   drift: {'detected' if summary['drift_detected'] else 'none'} "
        f"(share {summary['drift_share']:.2f}"
        + (f"; {', '.join(summary['drifted_features'][:5])}" if summary["drifted_features"] else "")
        + (" ...)" if len(summary["drifted_features"]) > 5 else ")"),
        f"   report: {summary['drift_report']}",
        *_describe_estimate(summary["drift"].get("estimate")),
    ]
    if not summary["retrained"]:
        lines.append(f"   {summary['retraining'].get('reason', 'not retrained')}")
        return "\n".join(lines)
    retrained = _describe(summary["training"])
    retrained = ["   " + line for line in retrained.splitlines()]
    return "\n".join(lines + ["   retrained on history + window:"] + retrained)


def _describe_estimate(estimate: dict | None) -> list[str]:
    """The champion's ROC AUC as estimated from its scores alone, beside what the window's
    labels (which the demo's windows happen to carry) and the test split say."""
    if not estimate or "roc_auc" not in estimate.get("metrics", {}):
        return []
    auc = estimate["metrics"]["roc_auc"]
    known = [f"test {estimate['test_metrics']['roc_auc']:.3f}"]
    if auc.get("realized") is not None:
        known.insert(0, f"realized from the labels {auc['realized']:.3f}")
    return [
        f"   estimated roc_auc before labels {auc['estimate']:.3f} "
        f"[{auc['lower']:.3f}, {auc['upper']:.3f}] ({'; '.join(known)})"
    ]


def describe_replays(tracking_uri: str, registered_model: str) -> str:
    """Every decision the demo's runs put on record, taken again with the code that runs now
    (what `ctloop replay --all` does): how many of each kind, and how many came out the same."""
    records = records_for(tracking_uri, registered_model)
    replays = [replay(record) for record in records]
    kinds = Counter(record.kind for record in records)
    same = sum(result.status == SAME for result in replays)
    listed = ", ".join(f"{count} {kind}" for kind, count in kinds.items()) or "none"
    lines = [f"\nEvery decision on record in MLflow: {listed}."]
    lines.append(
        f"Taken again from their records (ctloop replay): {same} of {len(replays)} the same"
    )
    lines += [
        f"   {result.status}: {result.original.kind} {result.original.id}: "
        f"{result.problem or ', '.join(result.differing_keys)}"
        for result in replays
        if result.status != SAME
    ]
    return "\n".join(lines)


class DemoWorkdirError(ValueError):
    """A `--workdir` the demo must not move aside: not a ctloop work directory, or the folder
    the command runs in."""


def set_aside(root: Path) -> Path | None:
    """Move a work directory that holds anything to the first free `<name>.<n>` beside it.

    The demo tells a story from an empty registry (a first model, a challenger, two windows):
    on a kept registry its first model meets an old champion and the story no longer holds. Its
    work directory is also `ctloop run`'s default, so nothing is deleted: the old one is kept
    whole under a new name. Only a ctloop work directory (an MLflow store or kfp.local's
    outputs in it) is moved, never the folder the command runs in: `--workdir .` in a project
    must not carry the project away. Returns the new name, or None when there was nothing to
    move.

    Raises:
        DemoWorkdirError: `root` holds files but is no work directory, or holds the current
            folder.
    """
    if not root.exists() or not any(root.iterdir()):
        return None
    if Path.cwd().resolve().is_relative_to(root.resolve()):
        raise DemoWorkdirError(
            f"--workdir {root} is the folder the demo runs in (or holds it): give a folder of "
            "its own, e.g. the default .ctloop"
        )
    if not (root / "mlflow.db").is_file() and not (root / "pipeline-root").is_dir():
        raise DemoWorkdirError(
            f"--workdir {root} holds files but is not a ctloop work directory (no mlflow.db "
            "or pipeline-root in it): give a new or empty folder"
        )
    number = 1
    while (kept := root.with_name(f"{root.name}.{number}")).exists():
        number += 1
    root.rename(kept)
    return kept


def run_demo(workdir: str | Path = ".ctloop", build_dir: str | Path = "build") -> int:
    work = Workdir(Path(workdir).resolve())
    kept = set_aside(work.root)
    if kept is not None:
        print(f"the previous work directory {work.root} is kept as {kept}; the demo starts afresh")
    full = export_telco_churn(work.root / "data" / "telco_churn.parquet")
    tables = demo_tables(full, work.root / "data")
    data = str(tables.history)
    print(f"ctloop demo in {work.root}; kfp.local's whole output of each run in {work.logs}/")
    with _run_log(work, "1-training", "run 1: first model (default hyperparameters)") as logs:
        first = run_training_pipeline(data, TARGET, work.root, {}, **logs)
    print(_describe(first))
    challenger = {"hyperparameters": SECOND_HYPERPARAMETERS}
    with _run_log(work, "2-training", f"run 2: challenger {SECOND_HYPERPARAMETERS}") as logs:
        second = run_training_pipeline(data, TARGET, work.root, challenger, **logs)
    print(_describe(second))
    champion = latest_champion(first, second)
    if champion is None:
        print("\n== no champion to serve or monitor with: no model passed the gate")
        return 0
    answers = ask_served_model(
        champion["deployment"]["model_artifact_uri"],
        champion["model_version"],
        tables.history,
        output_path=work.logs / "serving.log",
    )
    print(_describe_serving(f"serving the champion, v{champion['model_version']}", answers))
    title = "monitoring 1: a steady window (customers like the history)"
    with _run_log(work, "3-monitoring-steady", title) as logs:
        steady = run_monitoring_pipeline(str(tables.steady), data, TARGET, work.root, {}, **logs)
    print(_describe_monitoring(steady))
    title = "monitoring 2: a window of seniors (rare in the history)"
    with _run_log(work, "4-monitoring-seniors", title) as logs:
        shifted = run_monitoring_pipeline(str(tables.shifted), data, TARGET, work.root, {}, **logs)
    print(_describe_monitoring(shifted))
    registry = Registry(
        work.tracking_uri, EXPERIMENT, work.artifact_location.as_uri(), champion["registered_model"]
    )
    runs = [first, second, steady.get("training"), shifted.get("training")]
    stages = run_rollout(
        work.root / "rollout", registry, work.serving, runs, tables.shifted, tables.history, TARGET
    )
    compiled = compile_all(build_dir)
    print("\nWhat the rollout decided:\n" + describe_stages(stages) if stages else "")
    print(describe_replays(work.tracking_uri, champion["registered_model"]))
    print()
    print("Where everything is:")
    print(f"  work directory            {work.root}/")
    print(f"  data                      {tables.history.parent}/")
    print(f"  MLflow UI                 mlflow ui --backend-store-uri {work.tracking_uri}")
    where = f"--registered-model {champion['registered_model']}"
    where += f" --mlflow-tracking-uri {work.tracking_uri}"
    print(f"  history, every decision   ctloop audit {where}")
    print(f"  decisions taken again     ctloop replay --all {where}")
    print(f"  models (MLflow artifacts) {work.artifact_location}/")
    print(f"  InferenceService manifest {champion['inference_service_manifest']}")
    print(f"  drift reports (HTML)      {steady['drift_report']}")
    print(f"                            {shifted['drift_report']}")
    print(f"  rollout (logs, reports)   {work.root / 'rollout'}/")
    print(f"  logs                      {work.logs}/")
    print(f"  kfp.local outputs         {work.pipeline_root}/")
    print(f"  compiled pipelines        {compiled[0].parent.resolve()}/")
    print(f"  compiled components       {compiled[-1].parent.resolve()}/")
    return 0
