"""What `ctloop run` checks before any step runs, and how it reports a failure to a script.

None of these start kfp.local: each is refused in well under a second of the command's own
time, with one line naming the flag or parameter, and with `--json` the same failure as the
JSON line on stdout.
"""

import json

import pytest

from ctloop.components.gate.policy import DEFAULT_GATE_POLICY
from ctloop.pipelines.cli import main
from ctloop.pipelines.parameters import check_json_arguments


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_training_table_is_refused_before_the_local_run_starts(tmp_path, capsys):
    absent, workdir = tmp_path / "absent.parquet", tmp_path / "work"
    code, out, err = _run(
        capsys, "training", "--data", str(absent), "--target", "churn", "--workdir", str(workdir)
    )
    assert code == 2
    assert err.splitlines() == [f"ctloop run: --data: dataset {str(absent)!r} does not exist"]
    assert not workdir.exists()  # kfp.local never started


def test_a_table_that_is_not_one_is_refused_naming_its_flag(tmp_path, capsys):
    picture = tmp_path / "window.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    code, _, err = _run(
        capsys,
        "monitoring",
        "--current",
        str(picture),
        "--reference",
        str(picture),
        "--target",
        "y",
    )
    assert code == 2
    assert err.startswith(f"ctloop run: --current: dataset {str(picture)!r} is neither Parquet")


def test_json_failure_is_one_json_object_on_stdout(tmp_path, capsys):
    absent = tmp_path / "absent.csv"
    code, out, err = _run(capsys, "training", "--data", str(absent), "--target", "y", "--json")
    assert code == 2
    assert json.loads(out) == {
        "error": f"--data: dataset {str(absent)!r} does not exist",
        "exit_code": 2,
    }
    assert err.strip() == f"ctloop run: --data: dataset {str(absent)!r} does not exist"


def test_remote_and_templated_uris_are_left_to_the_load_step(tmp_path, capsys):
    """Nothing here can read s3:// or fill {date}: the check passes them on (and the run then
    stops at the first thing it can check, here the missing champion)."""
    code, _, err = _run(
        capsys,
        "monitoring",
        "--current",
        "s3://bucket/window-{date}.parquet",
        "--reference",
        "s3://bucket/train.parquet",
        "--target",
        "churn",
        "--param",
        'gate_policy={"thresholds": {"auc": {"min": 0.7}}}',
    )
    assert code == 2
    assert "gate_policy" in err and "s3://" not in err


@pytest.mark.parametrize(
    ("task", "policy", "expected"),
    [
        (
            "binary",
            {"thresholds": {"auc": {"min": 0.7}}},
            "--param gate_policy: thresholds.auc: the binary evaluation has no metric 'auc'; "
            "it reports accuracy, brier, f1, log_loss, pr_auc, precision, recall, roc_auc",
        ),
        (
            "regression",
            {"champion_comparison": {"roc_auc": {"direction": "higher"}}},
            "--param gate_policy: champion_comparison.roc_auc: the regression evaluation has no "
            "metric 'roc_auc'; it reports mae, r2, rmse",
        ),
    ],
)
def test_gate_policy_naming_a_metric_the_evaluation_lacks_is_refused_before_the_run(
    tmp_path, capsys, task, policy, expected
):
    code, _, err = _run(
        capsys,
        "training",
        "--data",
        str(tmp_path / "absent.parquet"),
        "--target",
        "y",
        "--param",
        f"task={task}",
        "--param",
        f"gate_policy={json.dumps(policy)}",
    )
    assert code == 2
    assert err.splitlines() == [f"ctloop run: {expected}"]


@pytest.mark.parametrize("task", sorted(DEFAULT_GATE_POLICY))
def test_default_gate_policies_name_only_metrics_the_evaluation_reports(task):
    check_json_arguments({"task": task, "gate_policy": json.dumps(DEFAULT_GATE_POLICY[task])})


def test_monitoring_needs_the_current_window(capsys):
    code, _, err = _run(capsys, "monitoring", "--reference", "r.parquet", "--target", "y")
    assert code == 2
    assert err.splitlines() == ["ctloop run: run monitoring needs --current"]


def test_training_needs_a_target(tmp_path, capsys):
    code, _, err = _run(capsys, "training", "--data", str(tmp_path / "t.parquet"))
    assert code == 2
    assert err.splitlines() == ["ctloop run: run training needs --target"]


def test_monitoring_without_reference_and_no_champion_says_what_to_give(tmp_path, capsys):
    window = tmp_path / "window.csv"
    window.write_text("x,churn\n1,0\n")
    workdir = tmp_path / "work"
    code, _, err = _run(capsys, "monitoring", "--current", str(window), "--workdir", str(workdir))
    assert code == 2
    assert err.splitlines() == [
        f"ctloop run: no champion ctloop-model@champion: no MLflow store at "
        f"{workdir.resolve() / 'mlflow.db'}; give --reference and --target, or train a "
        "champion first"
    ]
    assert not workdir.exists()  # looking did not create an empty store
