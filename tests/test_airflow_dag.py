"""The Airflow DAG (pipelines/airflow_dag.py), in a real Airflow of its own environment
(.venv-airflow, `make integrations`), driving the `ctloop` script of this one against the
stateful KFP API stand-in: Airflow's DagBag imports it, and `dag.test()` runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
CTLOOP = Path(sys.executable).with_name("ctloop")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not AIRFLOW_PYTHON.exists(), reason="Airflow not installed: `make integrations`"
    ),
]

# Run in the Airflow environment: load the dags folder, say what was found, and run the DAG once
# for each conf given (one process: Airflow's import and database cost seconds each).
DRIVER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.db import initdb

bag = DagBag(dag_folder=sys.argv[1])
found = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
dag = bag.dags.get("ctloop")
if dag is not None:
    found["downstream"] = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    initdb()  # an empty metadata database in AIRFLOW_HOME
    found["runs"] = []
    for conf in json.loads(sys.argv[2]):
        try:
            run = dag.test(run_conf=conf, mark_success_pattern=sys.argv[3] or None)
            found["runs"].append(str(run.state))
        except Exception as error:  # what a trigger with these params is refused for
            found["runs"].append(f"refused: {type(error).__name__}: {error}")
print(json.dumps(found))
"""


def _airflow(tmp_path, kfp_host: str, confs: list[dict], skip: str = "") -> dict:
    """Copy the DAG into a fresh dags folder, as a deployment does, and run the driver there,
    with the tasks whose ids match the pattern `skip` marked successful without running."""
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "airflow_dag.py", home / "dags")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_CTLOOP_BIN": str(CTLOOP),
        "AIRFLOW_VAR_CTLOOP_KFP_HOST": kfp_host,
    }
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", DRIVER, str(home / "dags"), json.dumps(confs), skip],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.usefixtures("isolated_kfp_context")
def test_a_dag_run_publishes_trains_until_the_run_ends_and_schedules_the_monitoring(
    kfp_api, tmp_path
):
    kfp_api.runs_end_as = "SUCCEEDED"
    conf = {
        "data": "s3://bucket/churn.parquet",
        "target": "Churn",
        "monitoring_params": ["retraining_max_rows=500"],
    }
    found = _airflow(tmp_path, kfp_api.host, [conf])

    assert found["errors"] == {} and found["dags"] == ["ctloop"]
    assert found["downstream"] == {
        "publish_pipelines": ["train"],
        "train": ["schedule_monitoring"],
        "schedule_monitoring": [],
    }
    assert found["runs"] == ["success"]
    pipelines = {p["display_name"]: pid for pid, p in kfp_api.pipelines.items()}
    assert sorted(pipelines) == ["ctloop-ab-analysis", "ctloop-monitoring", "ctloop-training"]
    [run] = kfp_api.runs.values()
    assert run["state"] == "SUCCEEDED"
    assert run["runtime_config"]["parameters"]["data_uri"] == "s3://bucket/churn.parquet"
    [schedule] = kfp_api.recurring_runs.values()
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert schedule["runtime_config"]["parameters"] == {"retraining_max_rows": 500}
    [version] = kfp_api.versions[pipelines["ctloop-monitoring"]]
    assert (
        schedule["pipeline_version_reference"]["pipeline_version_id"]
        == (version["pipeline_version_id"])
    )


@pytest.mark.usefixtures("isolated_kfp_context")
def test_a_trigger_without_data_is_refused_and_a_failed_training_fails_the_run_unscheduled(
    kfp_api, tmp_path
):
    kfp_api.runs_end_as = "FAILED"
    confs = [{"target": "y"}, {"data": "s3://bucket/churn.parquet", "target": "y"}]
    found = _airflow(tmp_path, kfp_api.host, confs, skip="publish_pipelines")

    refused, failed = found["runs"]
    assert refused == "refused: ParamValidationError: Invalid input for param data: No value passed"
    assert failed == "failed"
    [run] = kfp_api.runs.values()
    assert run["state"] == "FAILED"
    assert kfp_api.recurring_runs == {}
