"""An Airflow DAG that ships the loop to Kubeflow Pipelines: compile and upload the pipelines,
train once and wait for the run, then create or update the recurring monitoring run.

For teams whose orchestrator is Airflow. Copy this file into Airflow's dags folder; it imports
only Airflow, because Airflow's pins clash with ctloop's: each task runs the `ctloop` console
script of the environment ctloop is installed in, so the DAG holds no logic of its own and the
commands behave as they do by hand (idempotent upload and schedule, exit 2 on bad input).

Deployment settings are Airflow Variables (or `AIRFLOW_VAR_<NAME>` environment variables):
`ctloop_bin`, the path of the `ctloop` script (e.g. /opt/ctloop/.venv/bin/ctloop), and
`ctloop_kfp_host`, the KFP endpoint. What a run trains on comes with the trigger (the params).
"""

import shlex
from datetime import UTC, datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

CTLOOP = "{{ var.value.ctloop_bin | shquote }}"
HOST = "--host {{ var.value.ctloop_kfp_host | shquote }}"
EXPERIMENT = "--experiment {{ params.experiment | shquote }}"


def _pairs(param: str) -> str:
    """A `--param KEY=VALUE` for each entry of the list param `param`, each quoted."""
    return f"{{% for pair in params.{param} %}} --param {{{{ pair | shquote }}}}{{% endfor %}}"


# The build folder lives only as long as the task: another worker may run the next task.
PUBLISH = f"""set -eu
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
{CTLOOP} compile --output-dir "$build" >&2\
{{% if params.image %}} --image {{{{ params.image | shquote }}}}{{% endif %}}
{CTLOOP} upload {HOST} --build-dir "$build"\
{{% if params.version %}} --version {{{{ params.version | shquote }}}}{{% endif %}}
"""

TRAIN = (
    f"{CTLOOP} run training {HOST} {EXPERIMENT} --json"
    " --data {{ params.data | shquote }} --target {{ params.target | shquote }}"
    " --wait {{ params.training_timeout_s }}" + _pairs("training_params")
)

SCHEDULE = (
    f"{CTLOOP} schedule {HOST} {EXPERIMENT} --cron {{{{ params.monitoring_cron | shquote }}}}"
    + _pairs("monitoring_params")
)

KEY_VALUES = {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*"}}

with DAG(
    dag_id="ctloop",
    description="Publish the ctloop pipelines to KFP, train, and schedule the monitoring",
    schedule=None,  # triggered when a release is to be shipped
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # two shipments at once would race on the schedule
    user_defined_filters={"shquote": shlex.quote},
    params={
        "data": Param(type="string", minLength=1, description="training table URI"),
        "target": Param(type="string", minLength=1, description="label column"),
        "experiment": Param("ctloop", type="string", minLength=1, description="KFP experiment"),
        "image": Param("", type="string", description="component image (default: ctloop's)"),
        "version": Param("", type="string", description="pipeline version (default: commit)"),
        "training_params": Param([], **KEY_VALUES, description="training KEY=VALUE"),
        "training_timeout_s": Param(6 * 3600, type="integer", minimum=0),
        "monitoring_cron": Param("0 0 2 * * *", type="string", description="six fields, UTC"),
        "monitoring_params": Param([], **KEY_VALUES, description="monitoring KEY=VALUE"),
    },
    tags=["ctloop", "kubeflow"],
) as dag:
    publish = BashOperator(task_id="publish_pipelines", bash_command=PUBLISH)
    # No retry: a retry would submit a second training run beside the first.
    train = BashOperator(task_id="train", bash_command=TRAIN, retries=0)
    schedule = BashOperator(task_id="schedule_monitoring", bash_command=SCHEDULE)
    publish >> train >> schedule
