"""The monitoring pipeline run locally through kfp.local against the training loop's champion.

The session's training loop (conftest) leaves a champion (v1) and a challenger (v2) in its work
directory. Each test here works on a copy of that directory, so retraining (a new version, a
new canary) never changes what the training tests read.
"""

import json
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from ctloop.pipelines.cli import main
from ctloop.pipelines.local_run import Workdir

pytestmark = pytest.mark.e2e


@pytest.fixture
def workdir(training_loop, tmp_path):
    source, _, _ = training_loop
    copy = tmp_path / "work"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("pipeline-root"))
    return copy


@pytest.fixture(scope="module")
def windows(telco_churn_parquet, tmp_path_factory):
    """A random fifth of the table (no drift) and the month-to-month customers (drift)."""
    folder = tmp_path_factory.mktemp("windows")
    table = pq.read_table(telco_churn_parquet)
    steady = table.take(list(range(0, table.num_rows, 5)))
    shifted = table.filter(pc.equal(table["contract"], "Month-to-month"))
    pq.write_table(steady, folder / "steady.parquet")
    pq.write_table(shifted, folder / "shifted.parquet")
    return folder / "steady.parquet", folder / "shifted.parquet"


def _monitor(workdir, current, reference, capsys, *params: str) -> tuple[int, dict]:
    """Run monitoring on `current`; without a `reference`, neither it nor the target is given."""
    args = ["run", "monitoring", "--current", str(current)]
    if reference is not None:
        args += ["--reference", str(reference), "--target", "churn"]
    args += ["--workdir", str(workdir), "--json"]
    for param in params:
        args += ["--param", param]
    code = main(args)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _versions(workdir) -> list[str]:
    import mlflow

    store = Workdir(workdir).tracking_uri
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    return sorted(str(v.version) for v in client.search_model_versions("name='ctloop-model'"))


def test_a_steady_window_drifts_nowhere_and_keeps_the_champion(
    workdir, windows, telco_churn_parquet, capsys
):
    steady, _ = windows
    before = _versions(workdir)
    code, summary = _monitor(workdir, steady, None, capsys)  # the champion's data and target
    assert code == 0
    assert summary["taken_from_champion"] == {
        "reference_uri": str(telco_churn_parquet),
        "target": "churn",
        "model": "ctloop-model@champion",
        "version": "1",
    }
    assert summary["drift_detected"] is False
    assert summary["drifted_features"] == []
    assert summary["retrained"] is False
    assert summary["retraining"]["action"] == "none"
    assert "psi" in summary["drift"]["features"]["tenure"]
    assert summary["drift"]["prediction"] is not None  # scored with the champion
    assert _versions(workdir) == before


# The default policy's latency budget is a wall-clock measurement; on a loaded test machine it
# is noise, and this test is about the loop, so its gate keeps the quality rules only.
QUALITY_ONLY_GATE = json.dumps(
    {
        "thresholds": {"roc_auc": {"min": 0.6}, "log_loss": {"max": 0.7}},
        "champion_comparison": {"roc_auc": {"direction": "higher", "max_regression": 0.005}},
    }
)


def test_a_shifted_window_retrains_through_the_gate_into_a_canary(
    workdir, windows, telco_churn_parquet, capsys
):
    _, shifted = windows
    code, summary = _monitor(
        workdir, shifted, telco_churn_parquet, capsys, f"gate_policy={QUALITY_ONLY_GATE}"
    )
    assert code == 0
    assert summary["drift_detected"] is True
    assert "contract" in summary["drifted_features"]
    assert summary["drift_share"] > 0.3
    assert summary["retrained"] is True
    training = summary["training"]
    assert training["gate_passed"] is True
    assert training["model_version"] == "3" and training["alias"] == "challenger"
    manifest = yaml.safe_load(open(training["inference_service_manifest"]))
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert _versions(workdir) == ["1", "2", "3"]
    # The retraining table is the reference plus the window, written beside the reference.
    [retraining_file] = (telco_churn_parquet.parent / "retraining").glob("*.parquet")
    rows = pq.read_metadata(retraining_file).num_rows
    assert (
        rows == pq.read_metadata(telco_churn_parquet).num_rows + pq.read_metadata(shifted).num_rows
    )
    # Every decision of the loop is on record and taken again the same by `ctloop replay`:
    # both training runs' gates, this run's drift and route, and the retrained model's gate.
    where = ["--registered-model", "ctloop-model", "--mlflow-tracking-uri"]
    where += [Workdir(workdir).tracking_uri, "--json"]
    assert main(["replay", "--all", *where]) == 0
    replays = json.loads(capsys.readouterr().out)
    kinds = sorted(result["kind"] for result in replays["replays"])
    assert kinds == ["drift", "gate", "gate", "gate", "retraining_route"]
    assert replays["same"] == len(kinds)
    # The retrained version carries its model card and its lineage.
    import mlflow

    store = Workdir(workdir).tracking_uri
    tags = mlflow.MlflowClient(store, store).get_model_version("ctloop-model", "3").tags
    assert tags["ctloop.model_card"].endswith("model_card/model_card.json")
    assert tags["ctloop.lineage.image"] == "kfp.local (no image)"


def test_a_bad_drift_policy_fails_before_any_step_runs(
    workdir, windows, telco_churn_parquet, capsys
):
    steady, _ = windows
    code = main(
        [
            "run",
            "monitoring",
            "--current",
            str(steady),
            "--reference",
            str(telco_churn_parquet),
            "--target",
            "churn",
            "--workdir",
            str(workdir),
            "--param",
            'drift_policy={"psi": 1}',
        ]
    )
    assert code == 2
    assert "drift policy" in capsys.readouterr().err
    assert not (workdir / "pipeline-root").exists()


def test_api_mode_starts_a_training_run_through_the_kfp_api_once_per_cooldown(
    workdir, windows, telco_churn_parquet, capsys, kfp_api, compiled_pipelines, tmp_path
):
    kfp_api.add_pipeline("ctloop-training", compiled_pipelines / "pipelines" / "training.yaml")
    retraining_file = tmp_path / "retraining.parquet"
    params = (
        "retrain_mode=api",
        f"kfp_host={kfp_api.host}",
        f"retraining_data_uri={retraining_file}",
        'training_arguments={"target": "churn"}',
        "cooldown_hours=6",
    )
    _, shifted = windows
    code, summary = _monitor(workdir, shifted, telco_churn_parquet, capsys, *params)
    assert code == 0 and summary["drift_detected"] is True
    assert summary["retrained"] is False
    assert summary["retraining"]["action"] == "started"
    [run] = kfp_api.runs.values()
    assert run["runtime_config"]["parameters"] == {
        "target": "churn",
        "data_uri": str(retraining_file),
    }
    assert retraining_file.exists()
    # The run just started (and is still pending): the next drifted window waits.
    code, again = _monitor(workdir, shifted, telco_churn_parquet, capsys, *params)
    assert again["retraining"]["action"] == "skipped"
    assert "still PENDING" in again["retraining"]["reason"]
    assert len(kfp_api.runs) == 1
