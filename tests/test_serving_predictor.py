"""The ctloop predictor in process: loading model folders, decoding rows, scores, metadata."""

import asyncio
import logging
import shutil
import threading

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from ctloop.components.contract.model_folder import ModelLoadingError, load_model
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.model_uri import local_model_dir
from ctloop.components.contract.profile import feature_schema
from ctloop.components.table_io import read_table
from ctloop.serving import metrics
from ctloop.serving.metrics import ScoreHistogram
from ctloop.serving.predictor import CtloopPredictor
from tests.served_model import NUMERIC_FEATURES as NUMERIC_ONLY
from tests.served_model import save_positional_booster, train_model_folder


def _model_folder(folder, table: pa.Table, drop_columns=()) -> tuple:
    """(folder, profile, feature table) of a model trained as the pipeline does."""
    profile, features = train_model_folder(folder, table, drop_columns)
    return folder, profile, features


@pytest.fixture(scope="module")
def churn(tmp_path_factory, telco_churn_parquet):
    """(model folder, profile, feature table, in-process predict_scores of every row)."""
    folder, profile, features = _model_folder(
        tmp_path_factory.mktemp("serving") / "churn", read_table(str(telco_churn_parquet))
    )
    booster = xgb.Booster(model_file=str(folder / "model.json"))
    expected = predict_scores(booster, to_frame(features, feature_schema(profile)))
    return folder, profile, features, expected


@pytest.fixture(scope="module")
def predictor(churn):
    model = CtloopPredictor("churn", churn[0], version="7")
    model.load()
    return model


def _predict(model, payload):
    return asyncio.run(model.predict(payload))


def test_v1_list_and_object_rows_score_like_predict_scores(churn, predictor):
    _, profile, features, expected = churn
    objects = features.to_pylist()  # nulls (total_charges) stay null
    lists = [[row[name] for name in profile["feature_order"]] for row in objects]

    by_objects = _predict(predictor, {"instances": objects})
    by_lists = _predict(predictor, {"instances": lists})

    assert by_objects["model_version"] == "7"
    assert len(by_objects["predictions"]) == features.num_rows == 7043
    assert np.allclose(by_objects["predictions"], expected, atol=1e-6)
    assert np.allclose(by_lists["predictions"], expected, atol=1e-6)
    assert 0.2 < np.mean(by_lists["predictions"]) < 0.35  # a real churn model, not constants


def test_v1_return_labels_marks_scores_of_one_half_and_above(churn, predictor):
    objects = churn[2].slice(0, 300).to_pylist()
    answer = _predict(predictor, {"instances": objects, "return_labels": True})
    scores = np.asarray(answer["predictions"])
    assert answer["labels"] == [int(p >= 0.5) for p in scores]
    assert 0 < sum(answer["labels"]) < 300


def test_v2_feature_tensors_score_like_predict_scores(churn, predictor):
    _, profile, features, expected = churn
    rows = features.slice(0, 500)
    inputs = [
        InferInput(
            name,
            [rows.num_rows],
            "BYTES" if profile["features"][name]["kind"] == "categorical" else "FP32",
            data=rows.column(name).to_pylist(),
        )
        for name in profile["feature_order"]
    ]
    response = _predict(predictor, InferRequest("churn", inputs, request_id="r1"))

    assert response.model_version == "7"
    outputs = {output.name: output for output in response.outputs}
    assert sorted(outputs) == ["labels", "probabilities"]
    assert outputs["probabilities"].shape == [500]
    assert np.allclose(outputs["probabilities"].data, expected[:500], atol=1e-6)
    assert outputs["labels"].data.tolist() == (outputs["probabilities"].data >= 0.5).tolist()


def test_v2_returns_only_the_outputs_a_request_names(churn, predictor):
    features = churn[2].slice(0, 3)
    inputs = [
        InferInput(
            name,
            [3],
            "BYTES" if churn[1]["features"][name]["kind"] == "categorical" else "FP64",
            data=features.column(name).to_pylist(),
        )
        for name in features.column_names
    ]
    request = InferRequest("churn", inputs, request_outputs=[RequestedOutput("labels")])
    response = _predict(predictor, request)
    assert [output.name for output in response.outputs] == ["labels"]


def test_unseen_category_scores_like_a_missing_one(churn, predictor):
    row = churn[2].slice(0, 1).to_pylist()[0]
    unseen = _predict(predictor, {"instances": [{**row, "contract": "Three year"}]})
    missing = _predict(predictor, {"instances": [{**row, "contract": None}]})
    known = _predict(predictor, {"instances": [{**row, "contract": "Two year"}]})
    assert unseen["predictions"] == missing["predictions"]
    assert unseen["predictions"] != known["predictions"]


def test_metadata_declares_one_tensor_per_feature_and_both_outputs(churn, predictor):
    inputs = predictor.get_input_types()
    assert [tensor["name"] for tensor in inputs] == churn[1]["feature_order"]
    kinds = {tensor["name"]: tensor["datatype"] for tensor in inputs}
    assert kinds["contract"] == "BYTES" and kinds["tenure"] == "FP32"
    assert all(tensor["shape"] == [-1] for tensor in inputs)
    assert predictor.get_output_types() == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1]},
        {"name": "labels", "datatype": "INT32", "shape": [-1]},
    ]


class _ThreadRecordingPredictor(CtloopPredictor):
    """Records (rows, scored on the main thread?) for every batch it scores."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scored: list[tuple[int, bool]] = []

    def _score(self, matrix):
        self.scored.append((len(matrix), threading.current_thread() is threading.main_thread()))
        return super()._score(matrix)


def test_small_batches_skip_the_worker_thread_only_while_none_is_in_one(churn):
    model = _ThreadRecordingPredictor("churn", churn[0], inline_rows=10)
    model.load()
    _, profile, features, _ = churn
    objects = features.slice(0, 11).to_pylist()
    inputs = [
        InferInput(
            name,
            [2],
            "BYTES" if profile["features"][name]["kind"] == "categorical" else "FP32",
            data=features.column(name).slice(0, 2).to_pylist(),
        )
        for name in profile["feature_order"]
    ]

    async def requests():
        await model.predict({"instances": objects[:10]})  # small, nothing in a thread
        await model.predict(InferRequest("churn", inputs))
        await model.predict({"instances": objects})  # 11 rows: a worker thread
        # the 1-row batch arrives while the 11-row one is in a worker thread
        await asyncio.gather(
            model.predict({"instances": objects}), model.predict({"instances": objects[:1]})
        )

    asyncio.run(requests())

    assert model.scored[:3] == [(10, True), (2, True), (11, False)]
    assert sorted(model.scored[3:]) == [(1, False), (11, False)]


@pytest.fixture(scope="module")
def numeric_model(tmp_path_factory, telco_churn_parquet):
    table = read_table(str(telco_churn_parquet))
    drop = [name for name in table.column_names if name not in [*NUMERIC_ONLY, "churn"]]
    folder, profile, features = _model_folder(
        tmp_path_factory.mktemp("serving") / "numeric", table, drop
    )
    return folder, profile, features


def test_numeric_model_takes_one_input_0_matrix(numeric_model):
    folder, profile, features = numeric_model
    model = CtloopPredictor("numeric", folder)
    model.load()
    matrix = np.column_stack(
        [features.column(name).to_numpy(zero_copy_only=False) for name in NUMERIC_ONLY]
    ).astype(np.float32)[:200]
    expected = predict_scores(
        xgb.Booster(model_file=str(folder / "model.json")),
        to_frame(features.slice(0, 200), feature_schema(profile)),
    )

    response = _predict(
        model,
        InferRequest("numeric", [InferInput("input-0", [200, 5], "FP32", data=matrix.tolist())]),
    )
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}]
    assert response.model_version is None  # no version.txt, none given: none invented
    assert np.allclose(response.outputs[0].data, expected, atol=1e-6)
    with pytest.raises(InvalidInput, match=r"input 'input-0' has shape \[200, 4\]; expected"):
        _predict(
            model,
            InferRequest(
                "numeric", [InferInput("input-0", [200, 4], "FP32", data=matrix[:, :4].tolist())]
            ),
        )


def test_version_comes_from_version_txt_when_not_given(churn, tmp_path):
    folder = shutil.copytree(churn[0], tmp_path / "model")
    (folder / "version.txt").write_text("12\n")
    assert load_model(folder).version == "12"
    assert load_model(folder, version="13").version == "13"


def test_folder_without_profile_uses_the_boosters_own_schema(churn, tmp_path, caplog):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(churn[0] / "model.json", folder)
    with caplog.at_level(logging.WARNING, logger="ctloop.components.contract.model_folder"):
        model = load_model(folder)
    assert "no reference_profile.json" in caplog.text
    assert model.schema == feature_schema(churn[1])  # names, order and stored categories


def test_mlflow_model_dir_finds_the_profile_beside_it_in_the_run_artifacts(churn, tmp_path):
    import mlflow.xgboost

    booster = xgb.Booster(model_file=str(churn[0] / "model.json"))
    mlflow.xgboost.save_model(booster, tmp_path / "artifacts" / "model", pip_requirements=[])
    shutil.copy(churn[0] / "reference_profile.json", tmp_path / "artifacts")

    model = CtloopPredictor("churn", tmp_path / "artifacts" / "model")
    model.load()
    rows = churn[2].slice(0, 50).to_pylist()
    loaded = load_model(tmp_path / "artifacts" / "model")
    assert loaded.profile_path == tmp_path / "artifacts" / "reference_profile.json"
    assert loaded.model_path.name == "model.ubj"
    assert np.allclose(_predict(model, {"instances": rows})["predictions"], churn[3][:50])


def test_profile_of_another_model_is_rejected_at_load(churn, numeric_model, tmp_path):
    folder = shutil.copytree(churn[0], tmp_path / "mixed")
    shutil.copy(numeric_model[0] / "reference_profile.json", folder)
    with pytest.raises(ModelLoadingError, match="lists 5 features, the booster takes 19"):
        load_model(folder)


def test_folder_without_a_model_names_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadingError, match=r"neither model.json nor an MLflow MLmodel.*notes"):
        load_model(tmp_path)


def test_model_uri_may_be_a_path_or_file_uri_but_not_remote(tmp_path):
    assert local_model_dir(str(tmp_path)) == tmp_path
    assert local_model_dir(f"file://{tmp_path}") == tmp_path
    (tmp_path / "model.ubj").write_bytes(b"{")
    assert local_model_dir(str(tmp_path / "model.ubj")) == tmp_path / "model.ubj"
    with pytest.raises(ModelLoadingError, match="missing is not a folder or a model file"):
        local_model_dir(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadingError, match="scheme 's3' is not supported"):
        local_model_dir("s3://bucket/model")


def test_score_histogram_counts_batches_cumulatively_per_le_bound():
    histogram = ScoreHistogram()
    histogram.observe_many("m", "1", np.array([0.05, 0.051, 0.5, 0.99, 1.0], dtype=np.float32))
    histogram.observe_many("m", "1", np.array([0.01]))
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for sample in histogram.collect()[0].samples
    }
    assert samples[("ctloop_prediction_score_bucket", "0.05")] == 2  # 0.01 and 0.05 (le)
    assert samples[("ctloop_prediction_score_bucket", "0.1")] == 3
    assert samples[("ctloop_prediction_score_bucket", "0.5")] == 4
    assert samples[("ctloop_prediction_score_bucket", "1.0")] == 6
    assert samples[("ctloop_prediction_score_bucket", "+Inf")] == 6
    assert samples[("ctloop_prediction_score_count", None)] == 6
    assert samples[("ctloop_prediction_score_sum", None)] == pytest.approx(2.601, abs=1e-5)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("100000 100000\n", 1), ("250000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)],
)
def test_scoring_threads_follow_the_containers_cpu_limit(tmp_path, cpu_max, expected):
    import os

    from ctloop.serving.cpu_limit import usable_cpus

    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(limit) == min(expected or affinity, affinity)
    assert usable_cpus(tmp_path / "absent") == affinity


def test_fewer_than_one_scoring_thread_is_refused(churn, capsys):
    from ctloop.serving.server import main

    with pytest.raises(ValueError, match="scoring threads = 0 must be >= 1"):
        CtloopPredictor("churn", churn[0], nthread=0)
    with pytest.raises(SystemExit) as exited:
        main(["--model-dir", str(churn[0]), "--name", "churn", "--threads", "0"])
    assert exited.value.code == 2
    assert "--threads 0 must be >= 1" in capsys.readouterr().err


def _numeric_lists(features: pa.Table, count: int) -> list[list]:
    rows = features.select(NUMERIC_ONLY).slice(0, count).to_pylist()
    return [[row[name] for name in NUMERIC_ONLY] for row in rows]


def _tensors(churn, count: int, **changes) -> list[InferInput]:
    """One tensor per feature of `count` rows; `changes` replaces a feature's data."""
    _, profile, features, _ = churn
    return [
        InferInput(
            name,
            [count],
            "BYTES" if profile["features"][name]["kind"] == "categorical" else "FP64",
            data=changes.get(name, features.column(name).slice(0, count).to_pylist()),
        )
        for name in profile["feature_order"]
    ]


@pytest.mark.parametrize(
    "value", [1e39, -1e39, float("inf"), 10**400], ids=["1e39", "-1e39", "inf", "10**400"]
)
def test_values_beyond_float32_are_refused_naming_row_and_feature(
    churn, predictor, numeric_model, value
):
    numeric = CtloopPredictor("numeric", numeric_model[0])
    numeric.load()
    lists = _numeric_lists(numeric_model[2], 3)  # all numbers: the one-conversion path
    lists[2][2] = value
    objects = churn[2].slice(0, 2).to_pylist()
    objects[1]["monthly_charges"] = value

    with pytest.raises(InvalidInput, match="instance 2: numeric feature 'tenure' is infinite or"):
        _predict(numeric, {"instances": lists})
    with pytest.raises(InvalidInput, match="instance 1: numeric feature 'monthly_charges' is inf"):
        _predict(predictor, {"instances": objects})
    if isinstance(value, float):  # a v2 tensor holds floats
        tenure = [1.0, value]
        with pytest.raises(InvalidInput, match=r"row 1: numeric feature 'tenure' is infinite or"):
            _predict(predictor, InferRequest("churn", _tensors(churn, 2, tenure=tenure)))


def test_an_integer_beyond_float64_in_a_v2_tensor_is_a_bad_request(churn, predictor):
    request = InferRequest("churn", _tensors(churn, 2, tenure=[1, 10**400]))
    with pytest.raises(InvalidInput, match="input 'tenure': a value is beyond float32's range"):
        _predict(predictor, request)


def test_a_booster_without_feature_names_is_served_by_position(telco_churn_parquet, tmp_path):
    table = read_table(str(telco_churn_parquet))
    booster, matrix = save_positional_booster(tmp_path / "bare" / "model.ubj", table)
    model = CtloopPredictor("bare", tmp_path / "bare")
    model.load()
    expected = booster.inplace_predict(matrix[:50])

    by_lists = _predict(model, {"instances": matrix[:50].tolist()})
    by_tensor = _predict(
        model, InferRequest("bare", [InferInput("input-0", [50, 5], "FP32", matrix[:50].tolist())])
    )

    assert np.allclose(by_lists["predictions"], expected, atol=1e-6)
    assert np.allclose(by_tensor.outputs[0].data, expected, atol=1e-6)
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}]
    with pytest.raises(InvalidInput, match="records no feature names, so instances cannot be obj"):
        _predict(model, {"instances": [{"f0": 1, "f1": 0, "f2": 3, "f3": 20.0, "f4": 60.0}]})
    named = [InferInput(f"f{i}", [1], "FP32", [1.0]) for i in range(5)]
    with pytest.raises(InvalidInput, match=r"send one 'input-0' FP32 tensor of shape \[N, 5\]"):
        _predict(model, InferRequest("bare", named))


def test_a_folder_with_one_booster_file_of_another_name_or_the_file_itself_loads(churn, tmp_path):
    folder = tmp_path / "kserve-layout"
    folder.mkdir()
    xgb.Booster(model_file=str(churn[0] / "model.json")).save_model(folder / "churn.ubj")
    shutil.copy(churn[0] / "reference_profile.json", folder)

    from_folder, from_file = load_model(folder), load_model(folder / "churn.ubj")

    assert from_folder.model_path == from_file.model_path == folder / "churn.ubj"
    assert from_folder.profile_path == from_file.profile_path == folder / "reference_profile.json"
    assert from_folder.schema == from_file.schema == feature_schema(churn[1])
    shutil.copy(folder / "churn.ubj", folder / "other.json")
    with pytest.raises(ModelLoadingError, match=r"several booster files \['churn.ubj', 'other"):
        load_model(folder)


def test_a_model_without_a_version_says_so_instead_of_inventing_one(churn):
    model = CtloopPredictor("unversioned", churn[0])  # the folder has no version.txt
    model.load()
    objects = churn[2].slice(0, 2).to_pylist()

    v1 = _predict(model, {"instances": objects})
    v2 = _predict(model, InferRequest("unversioned", _tensors(churn, 2)))

    assert model.version is None
    assert v1["model_version"] is None and v2.model_version is None
    labels = {
        sample.labels["model_version"]
        for family in metrics.PREDICTIONS.collect()
        for sample in family.samples
        if sample.labels["model_name"] == "unversioned"
    }
    assert labels == {""}  # Prometheus: no value, not a made-up version
