"""The model card of a registered version: JSON on its MLflow run (the version tagged with where)
and Markdown for the UI, from the evaluation, the gate's decision record and the profile."""

import json
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from ctloop.components.data.dataset_metadata import content_hash
from ctloop.components.data.profile import profile_table
from ctloop.components.decisions.record import new_record
from ctloop.components.evaluate.slices import slice_metrics
from ctloop.components.registry import mlflow_registry, model_card
from ctloop.components.registry.card_markdown import card_markdown
from ctloop.components.registry.component import write_model_card
from ctloop.components.registry.mlflow_registry import RegistryError
from ctloop.components.registry.model_card import ModelCardError
from tests import sqlite_registry

tracking_uri = sqlite_registry.tracking_uri  # a fixture: a SQLite MLflow registry per module
NAME = "churn-card"
HOSTILE = "<img src=x onerror=alert(1)>"
"""A category value that would run script if the card's Markdown let it through as HTML."""


def _test_table(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # A group of 12 rows: reported, too small to judge.
    contract = rng.choice(["Month-to-month", "One year", "Two year"], size=rows - 12)
    frame = pd.DataFrame(
        {
            "contract": np.concatenate([contract, [HOSTILE] * 12]),
            "tenure": rng.integers(0, 72, size=rows).astype(float),
            "gender": rng.choice(["Female", "Male"], size=rows),
        }
    )
    logit = 1.2 * (frame["contract"] == "Month-to-month") - 0.04 * frame["tenure"]
    frame["churn"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What the pipeline hands the card step: evaluation (interface 5), gate record
    (interface 1) and reference profile, for a version registered from a real run."""
    frame = _test_table()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    profile = profile_table(table.drop_columns(["gender"]), "churn")
    profile["dataset"] = {"uri": "s3://data/churn.parquet", "content_hash": content_hash(table)}
    rng = np.random.default_rng(5)
    scores = np.clip(0.3 + 0.4 * frame["churn"] + rng.normal(0, 0.2, len(frame)), 0.01, 0.99)
    slices = slice_metrics(
        frame, frame["churn"], scores, categorical=["contract"], numeric={"tenure": 3}, min_rows=30
    )
    positives = int(frame["churn"].sum())
    evaluation = {
        "task": "binary",
        "rows": len(frame),
        "candidate": {"roc_auc": 0.8123, "log_loss": 0.43, "accuracy": 0.77},
        "champion": None,
        "champion_version": None,
        "confusion_matrix": {
            "categories": ["No", "Yes"],
            "matrix": [[len(frame) - positives - 20, 20], [positives - 30, 30]],
        },
        "slices": {
            "policy": {"categorical": ["contract"], "numeric": {"tenure": 3}, "min_rows": 30},
            "candidate": slices,
            "champion": None,
        },
        "unseen_categories": {"contract": {"rows": 12, "values": [HOSTILE]}},
    }
    record = new_record(
        "gate",
        subject={"registered_model": NAME, "run_id": None, "kfp_run_id": "run-1"},
        inputs={"candidate": evaluation["candidate"], "slices": evaluation["slices"]},
        policy='{"slices": {"categorical": ["contract"], "min_rows": 30}}',
        outcome={"passed": True, "failures": []},
        reasons=["all 9 checks passed (0 skipped)"],
    )
    return {
        "evaluation": evaluation,
        "gate_record": json.loads(record.to_json()),
        "reference_profile": profile,
        "frame": frame,
    }


@pytest.fixture(scope="module")
def registered(tracking_uri, inputs, tmp_path_factory):
    """(version, run id) of a small model registered the way the register step does."""
    frame = inputs["frame"]
    features = frame[["tenure"]]
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2},
        xgb.DMatrix(features, label=frame["churn"]),
        num_boost_round=3,
    )
    location = tmp_path_factory.mktemp("artifacts").as_uri()
    with mlflow_registry.training_run(
        tracking_uri,
        "card-test",
        run_name="train",
        tags={"ctloop.dataset.content_hash": "sha256:" + "cd" * 32},
        params={"max_depth": 2},
        artifact_location=location,
    ) as run:
        model_uri = mlflow_registry.log_model_with_profile(
            booster, inputs["reference_profile"], features.iloc[:3]
        )
    version, _ = mlflow_registry.run_registration(
        tracking_uri,
        NAME,
        run_id=run.info.run_id,
        model_uri=model_uri,
        evaluation=inputs["evaluation"],
        kfp_run={"id": "run-1", "name": "nightly"},
    )
    return version, run.info.run_id


def _card(inputs, **changes):
    arguments = {
        "registered_model": NAME,
        "model_version": "1",
        "run_id": "abc",
        "intended_use": "Rank customers by churn risk for retention calls; not for pricing.",
        "evaluation": inputs["evaluation"],
        "gate_record": inputs["gate_record"],
        "reference_profile": inputs["reference_profile"],
        "version_tags": {"ctloop.lineage.image": "kfp.local (no image)", "other": "x"},
    }
    return model_card.model_card(**{**arguments, **changes})


def test_the_card_is_logged_on_the_versions_run_and_the_version_points_at_it(
    tracking_uri, inputs, registered
):
    version, run_id = registered
    card, markdown, uri = model_card.run_model_card(
        tracking_uri,
        NAME,
        version,
        run_id=run_id,
        intended_use="Rank customers by churn risk.",
        evaluation=inputs["evaluation"],
        gate_record=inputs["gate_record"],
        reference_profile=inputs["reference_profile"],
    )
    assert uri == f"runs:/{run_id}/model_card/model_card.json"
    assert mlflow.artifacts.load_dict(uri) == card
    tags = MlflowClient(tracking_uri).get_model_version(NAME, version).tags
    assert tags["ctloop.model_card"] == uri
    # The lineage is the version's own tags, written at registration.
    lineage = card["lineage"]
    assert lineage["ctloop.lineage.image"] == "kfp.local (no image)"
    assert json.loads(lineage["ctloop.lineage.kfp_pipeline_version"])["unknown"]
    assert lineage["ctloop.dataset.content_hash"] == "sha256:" + "cd" * 32
    assert lineage["kfp.run_id"] == "run-1"
    assert card["model"] == {"registered_model": NAME, "version": version, "run_id": run_id}
    assert markdown == card_markdown(card)


def test_the_card_summarises_training_data_metrics_slices_gate_and_limitations(inputs):
    card = _card(inputs)
    frame, profile = inputs["frame"], inputs["reference_profile"]
    data = card["training_data"]
    assert (data["rows"], data["features"], data["target"]) == (len(frame), 2, "churn")
    assert (data["categorical"], data["numeric"]) == (["contract"], ["tenure"])
    assert data["content_hash"] == profile["dataset"]["content_hash"]
    positives = int(frame["churn"].sum())
    assert data["label_balance"]["rows"] == [len(frame) - positives, positives]
    assert data["label_balance"]["positive_rate"] == pytest.approx(positives / len(frame))
    assert card["metrics"]["candidate"] == inputs["evaluation"]["candidate"]
    assert card["slices"]["min_rows"] == 30
    assert [c["column"] for c in card["slices"]["columns"]] == ["contract", "tenure"]
    assert card["fairness"]["gaps"]["contract"]["tpr"]["gap"] >= 0
    assert card["gate"]["outcome"] == {"passed": True, "failures": []}
    assert card["limitations"]["too_small_slices"] == [
        {"column": "contract", "group": HOSTILE, "rows": 12}
    ]
    assert card["limitations"]["unseen_categories"] == {
        "contract": {"rows": 12, "values": [HOSTILE]}
    }
    assert card["lineage"] == {"ctloop.lineage.image": "kfp.local (no image)"}


def test_the_markdown_shows_each_section_and_escapes_every_data_text(inputs):
    markdown = card_markdown(_card(inputs, intended_use="Retention calls <b>only</b>"))
    for heading in (
        "## Intended use",
        "## Training data",
        "## Metrics",
        "## Metrics per slice",
        "## Fairness",
        "## Gate decision",
        "## Limitations",
        "## Lineage",
    ):
        assert heading in markdown
    assert "Retention calls &lt;b&gt;only&lt;/b&gt;" in markdown
    assert "<img" not in markdown and "<b>" not in markdown
    assert "&lt;img src=x onerror=alert(1)&gt; | 12 |" in markdown  # the small group's row
    assert "too small to judge" in markdown
    assert "Slices too small to judge (fewer than 30 rows)" in markdown
    assert "contract: 12 test rows, e.g. &lt;img" in markdown
    assert "The quality gate **passed**" in markdown
    assert "The gate's slice and fairness checks passed." in markdown


def test_a_failed_fairness_check_is_named_with_the_gates_reason(inputs):
    record = {
        **inputs["gate_record"],
        "outcome": {"passed": False, "failures": ["fairness contract:tpr_gap", "threshold auc"]},
        "reasons": [
            "fairness contract:tpr_gap: tpr gap 0.31 > max 0.1",
            "threshold auc: 0.7 < min 0.75",
        ],
    }
    card = _card(inputs, gate_record=record)
    assert card["fairness"]["gate_failures"] == ["fairness contract:tpr_gap"]
    markdown = card_markdown(card)
    assert "- fairness contract:tpr_gap: tpr gap 0.31 &gt; max 0.1" in markdown
    assert "The quality gate **failed**" in markdown


def test_without_slices_or_stated_use_the_card_says_so(inputs):
    evaluation = {**inputs["evaluation"], "slices": None, "unseen_categories": {}}
    card = _card(inputs, evaluation=evaluation, intended_use="")
    assert card["slices"] is None and card["limitations"]["too_small_slices"] == []
    markdown = card_markdown(card)
    assert "The gate policy named no slice columns." in markdown
    assert "Not stated (the pipeline's `intended_use` parameter was empty)." in markdown
    assert "No slice too small to judge and no category unseen in training." in markdown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gate_record": {"kind": "drift", "outcome": {}}}, "gate_record: expected the quality"),
        ({"evaluation": {"rows": 3}}, "evaluation: no 'candidate' metrics"),
        ({"reference_profile": {"features": {}}}, "reference_profile: no 'features'"),
        ({"run_id": ""}, "run_id: empty"),
    ],
)
def test_inputs_the_card_cannot_be_written_from_are_named(inputs, change, message):
    with pytest.raises(ModelCardError, match=message):
        _card(inputs, **change)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("evaluation", {"slices": [1]}, "evaluation: 'slices' is not a JSON object"),
        ("evaluation", {"slices": {"candidate": "x"}}, "evaluation: 'slices.candidate' is not"),
        ("evaluation", {"confusion_matrix": [1]}, "evaluation: 'confusion_matrix' is not"),
        (
            "evaluation",
            {"confusion_matrix": {"matrix": [[1, "a"]]}},
            "evaluation: 'confusion_matrix.matrix' is not rows of counts",
        ),
        ("evaluation", {"unseen_categories": [1]}, "evaluation: 'unseen_categories' is not"),
        ("gate_record", {"outcome": {"failures": [1]}}, "gate_record: 'outcome.failures' is not"),
        ("gate_record", {"reasons": "one"}, "gate_record: 'reasons' is not a JSON array of"),
        ("reference_profile", {"features": ["a"]}, "reference_profile: 'features' is not"),
        ("reference_profile", {"features": {"a": 1}}, "reference_profile: feature 'a' is not"),
    ],
)
def test_inputs_of_another_shape_are_named_not_crashed_on(inputs, name, change, message):
    with pytest.raises(ModelCardError, match=message):
        _card(inputs, **{name: {**inputs[name], **change}})


def test_a_card_for_another_run_or_a_missing_version_is_refused_and_nothing_logged(
    tracking_uri, inputs, registered
):
    version, run_id = registered
    arguments = {key: inputs[key] for key in ("evaluation", "gate_record", "reference_profile")}
    with pytest.raises(RegistryError, match=f"registered from run {run_id}, not from run 'other'"):
        model_card.run_model_card(
            tracking_uri, NAME, version, run_id="other", intended_use="", **arguments
        )
    with pytest.raises(RegistryError, match="has no version '99'"):
        model_card.run_model_card(
            tracking_uri, NAME, "99", run_id=run_id, intended_use="", **arguments
        )


def test_the_component_reads_its_artifacts_and_writes_the_markdown(
    tracking_uri, inputs, registered, tmp_path
):
    version, run_id = registered
    paths = {}
    for name in ("evaluation", "gate_record", "reference_profile"):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(inputs[name]))
    markdown = SimpleNamespace(path=str(tmp_path / "card.md"), metadata={})
    (uri,) = write_model_card.python_func(
        evaluation=SimpleNamespace(path=str(paths["evaluation"])),
        gate_record=SimpleNamespace(path=str(paths["gate_record"])),
        reference_profile=SimpleNamespace(path=str(paths["reference_profile"])),
        model_version=version,
        registered_model_name=NAME,
        run_id=run_id,
        mlflow_tracking_uri=tracking_uri,
        model_card=markdown,
        intended_use="Rank customers by churn risk.",
    )
    assert uri == f"runs:/{run_id}/model_card/model_card.json"
    text = (tmp_path / "card.md").read_text()
    assert text.startswith(f"# Model card: {NAME} version {version}")
    assert markdown.metadata["display_name"] == f"Model card: {NAME} v{version}"
    paths["evaluation"].write_text("{not json")
    with pytest.raises(ModelCardError, match="evaluation: cannot read JSON from"):
        model_card.read_card_inputs(evaluation=str(paths["evaluation"]))
