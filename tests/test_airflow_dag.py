"""The Airflow DAG (pipelines/airflow_dag.py), in a real Airflow of its own environment
(.venv-airflow, `make integrations`), driving the `ctloop` script of this one against the
stateful KFP API stand-in: Airflow's DagBag imports it, and `dag.test()` runs it.

One Airflow process serves the whole module: importing Airflow, creating its metadata database
and the first `dag.test()` (which builds Airflow's in-process execution API) cost seconds each,
and a later `dag.test()` in the same process costs a fraction of one. Each test still gets a
fresh KFP stand-in (the process reads its address with every request); Airflow's database keeps
the runs of the tests before, as a deployment's does."""

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

# Run in the Airflow environment: load the dags folder and say what was found, then, for each
# request read from stdin (a JSON line: the KFP host, the confs, the pattern of task ids to mark
# successful without running), run the DAG once for each conf and say how each run ended.
# Answers are JSON lines on the file descriptor given, apart from whatever Airflow prints.
DRIVER = """
import gc, json, os, sys

# Airflow's import and set-up build objects that live as long as the process: collecting while
# they are built, and scanning them again at each later collection, costs seconds of CPU.
gc.disable()
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.db import initdb

answers = os.fdopen(int(sys.argv[2]), "w")

def answer(found):
    answers.write(json.dumps(found) + "\\n")
    answers.flush()

bag = DagBag(dag_folder=sys.argv[1])
found = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
dag = bag.dags.get("ctloop")
if dag is not None:
    found["downstream"] = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    initdb()  # an empty metadata database in AIRFLOW_HOME
gc.freeze()
gc.enable()
answer(found)
for line in sys.stdin:
    request = json.loads(line)
    os.environ["AIRFLOW_VAR_CTLOOP_KFP_HOST"] = request["kfp_host"]
    runs = []
    for conf in request["confs"]:
        try:
            run = dag.test(run_conf=conf, mark_success_pattern=request["skip"] or None)
            runs.append(str(run.state))
        except Exception as error:  # what a trigger with these params is refused for
            runs.append(f"refused: {type(error).__name__}: {error}")
    answer(runs)
"""


class Airflow:
    """The driver process: what its DagBag found, and `runs()` to run the DAG."""

    def __init__(self, workdir: Path) -> None:
        home = workdir / "airflow"
        (home / "dags").mkdir(parents=True)
        shutil.copy(ROOT / "pipelines" / "airflow_dag.py", home / "dags")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_VAR_CTLOOP_BIN": str(CTLOOP),
        }
        self._log = workdir / "airflow.log"
        read_end, write_end = os.pipe()
        with open(self._log, "w") as log:
            self._process = subprocess.Popen(
                [str(AIRFLOW_PYTHON), "-c", DRIVER, str(home / "dags"), str(write_end)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=workdir,
                pass_fds=[write_end],
            )
        os.close(write_end)  # the driver's copy is the only one: its exit ends the answers
        self._answers = os.fdopen(read_end)
        self.found = self._answer()

    def runs(self, kfp_host: str, confs: list[dict], skip: str = "") -> list[str]:
        """How a run of the DAG against the KFP API at `kfp_host` ended for each conf, with the
        tasks whose ids match the pattern `skip` marked successful without running."""
        request = {"kfp_host": kfp_host, "confs": confs, "skip": skip}
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the driver has ended: _answer says why
        return self._answer()

    def _answer(self):
        line = self._answers.readline()
        assert line, f"the Airflow driver ended: {self._log.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        """Stop the driver: its database is thrown away with its folder, so nothing needs
        Airflow's orderly exit, which costs seconds."""
        self._answers.close()
        self._process.kill()
        self._process.wait()
        self._process.stdin.close()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A deployment's view: the DAG copied into a fresh dags folder of a fresh Airflow."""
    airflow = Airflow(tmp_path_factory.mktemp("airflow"))
    yield airflow
    airflow.close()


@pytest.mark.usefixtures("isolated_kfp_context")
def test_a_dag_run_publishes_trains_until_the_run_ends_and_schedules_the_monitoring(
    kfp_api, airflow
):
    kfp_api.runs_end_as = "SUCCEEDED"
    conf = {
        "data": "s3://bucket/churn.parquet",
        "target": "Churn",
        "monitoring_params": ["retraining_max_rows=500"],
    }
    found = airflow.found
    assert found["errors"] == {} and found["dags"] == ["ctloop"]
    assert found["downstream"] == {
        "publish_pipelines": ["train"],
        "train": ["schedule_monitoring"],
        "schedule_monitoring": [],
    }

    assert airflow.runs(kfp_api.host, [conf]) == ["success"]
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
    kfp_api, airflow
):
    kfp_api.runs_end_as = "FAILED"
    confs = [{"target": "y"}, {"data": "s3://bucket/churn.parquet", "target": "y"}]
    refused, failed = airflow.runs(kfp_api.host, confs, skip="publish_pipelines")

    assert refused == "refused: ParamValidationError: Invalid input for param data: No value passed"
    assert failed == "failed"
    [run] = kfp_api.runs.values()
    assert run["state"] == "FAILED"
    assert kfp_api.recurring_runs == {}
