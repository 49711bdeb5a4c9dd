"""`ctloop schedule`: the recurring run, against a stateful KFP API v2beta1 stand-in."""

import json

import pytest

from ctloop.pipelines.cli import main
from ctloop.pipelines.schedule import ScheduleError, check_cron

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]

PIPELINE = "ctloop-monitoring"


@pytest.fixture
def kfp_api(kfp_api, compiled_pipelines):
    """The stand-in with the compiled monitoring pipeline uploaded as `PIPELINE`."""
    monitoring = compiled_pipelines / "pipelines" / "monitoring.yaml"
    kfp_api.pipeline_id = kfp_api.add_pipeline(PIPELINE, monitoring)
    return kfp_api


def _schedule(kfp_api, capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["schedule", "--host", kfp_api.host, *args])  # --pipeline: the default
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else None, captured.err


def test_schedule_creates_an_enabled_recurring_run_with_one_at_a_time_and_no_catchup(
    kfp_api, capsys
):
    code, outcome, _ = _schedule(
        kfp_api,
        capsys,
        "--cron",
        "0 0 2 * * *",
        "--experiment",
        "nightly",
        "--param",
        "retraining_max_rows=500",
        "--param",
        'key_columns=["customer_id"]',
    )
    assert code == 0 and outcome["action"] == "created"
    [run] = kfp_api.recurring_runs.values()
    assert run["display_name"] == "ctloop-monitoring"
    assert run["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert run["mode"] == "ENABLE"
    assert run["max_concurrency"] == "1"
    assert run["no_catchup"] is True
    version = kfp_api.versions[kfp_api.pipeline_id][-1]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": kfp_api.pipeline_id,
        "pipeline_version_id": version["pipeline_version_id"],
    }
    # Typed by the uploaded version's compiled parameters: an int and a JSON list.
    assert run["runtime_config"]["parameters"] == {
        "retraining_max_rows": 500,
        "key_columns": ["customer_id"],
    }
    [experiment] = kfp_api.experiments.values()
    assert run["experiment_id"] == experiment["experiment_id"]


def test_rerunning_the_same_schedule_changes_nothing(kfp_api, capsys):
    args = ("--cron", "0 0 2 * * *", "--param", "retraining_max_rows=500")
    _schedule(kfp_api, capsys, *args)
    [first_id] = kfp_api.recurring_runs
    code, outcome, _ = _schedule(kfp_api, capsys, *args)
    assert code == 0 and outcome["action"] == "unchanged"
    assert list(kfp_api.recurring_runs) == [first_id]
    assert not any(method == "DELETE" for method, _ in kfp_api.calls)


def test_a_new_cron_or_version_replaces_the_schedule_instead_of_adding_one(kfp_api, capsys):
    _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *")
    code, outcome, _ = _schedule(kfp_api, capsys, "--cron", "0 30 3 * * *")
    assert code == 0 and outcome["action"] == "updated"
    [run] = kfp_api.recurring_runs.values()
    assert run["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * *"

    spec = kfp_api.versions[kfp_api.pipeline_id][0]["pipeline_spec"]
    newest = kfp_api.add_version(kfp_api.pipeline_id, "v2", spec)
    code, outcome, _ = _schedule(kfp_api, capsys, "--cron", "0 30 3 * * *")
    assert outcome["action"] == "updated"
    [run] = kfp_api.recurring_runs.values()
    assert run["pipeline_version_reference"]["pipeline_version_id"] == newest


def test_pause_resume_and_delete_are_idempotent(kfp_api, capsys):
    _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *")
    [run_id] = kfp_api.recurring_runs
    actions = []
    for flag in ("--pause", "--pause", "--resume", "--resume", "--delete", "--delete"):
        code, outcome, _ = _schedule(kfp_api, capsys, flag)
        assert code == 0
        actions.append(outcome["action"])
        if flag == "--pause":
            assert kfp_api.recurring_runs[run_id]["status"] == "DISABLED"
    assert actions == ["paused", "unchanged", "resumed", "unchanged", "deleted", "absent"]
    assert kfp_api.recurring_runs == {}


def test_rescheduling_a_paused_schedule_resumes_it(kfp_api, capsys):
    _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *")
    _schedule(kfp_api, capsys, "--pause")
    code, outcome, _ = _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *")
    assert outcome["action"] == "resumed"
    [run] = kfp_api.recurring_runs.values()
    assert run["status"] == "ENABLED"


def test_a_five_field_cron_is_rejected_before_any_request(kfp_api, capsys):
    code, outcome, err = _schedule(kfp_api, capsys, "--cron", "0 2 * * *")
    assert code == 2 and outcome is None
    assert "five fields" in err and "seconds first" in err and "'0 0 2 * * *'" in err
    assert kfp_api.calls == []


def test_a_param_the_uploaded_pipeline_lacks_is_rejected_and_nothing_is_created(kfp_api, capsys):
    code, _, err = _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *", "--param", "min_rows=5")
    assert code == 2
    assert "--param min_rows: the pipeline has no such parameter" in err
    assert kfp_api.recurring_runs == {}


def test_a_malformed_json_param_is_rejected_and_nothing_is_created(kfp_api, capsys):
    capacity = 'serving_capacity={"min_replicas": 2, "max_replicas": 1}'
    code, _, err = _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *", "--param", capacity)
    assert code == 2
    assert "serving_capacity: max_replicas 1 is below min_replicas 2" in err
    assert kfp_api.recurring_runs == {}


def test_scheduling_a_pipeline_that_was_never_uploaded_says_to_upload_it(kfp_api, capsys):
    code = main(["schedule", "--host", kfp_api.host, "--cron", "0 0 2 * * *", "--pipeline", "x"])
    assert code == 2
    assert "pipeline 'x' is not on the server" in capsys.readouterr().err


def test_pausing_a_schedule_that_does_not_exist_is_an_error(kfp_api, capsys):
    code, _, err = _schedule(kfp_api, capsys, "--pause")
    assert code == 2 and "no recurring run named 'ctloop-monitoring'" in err


def test_schedule_sends_the_mounted_service_account_token(kfp_api, capsys, tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("sa-token-9")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    _schedule(kfp_api, capsys, "--cron", "0 0 2 * * *")
    assert kfp_api.tokens and set(kfp_api.tokens) == {"sa-token-9"}


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 2 * * *",
        "*/30 * * * * ?",
        "0 0 6 * * MON-FRI",
        "0 0 0 1 JAN,JUL *",
        "@daily",
        "@every 6h",
    ],
)
def test_kfp_cron_forms_are_accepted(cron):
    assert check_cron(cron) == cron


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 25 * * *", "hours field '25': 25 is outside 0-23"),
        ("0 0 2 * * * *", "has 7 fields"),
        ("? 0 2 * * *", "seconds field .*only in the day fields"),
        ("0 0 2 * * FUNDAY", "'FUNDAY' is not a number or name"),
        ("*/0 * * * * *", "step '0' must be a positive integer"),
        ("@sometimes", "unknown descriptor"),
    ],
)
def test_malformed_crons_name_the_field_and_rule(cron, message):
    with pytest.raises(ScheduleError, match=message):
        check_cron(cron)
