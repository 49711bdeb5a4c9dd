"""The `serving_capacity` parameter: parsed, refused when wrong, and written into the
InferenceService the deploy step renders (validated against the real KServe CRD)."""

import pytest
import yaml

from ctloop.components.deploy import rollout
from ctloop.components.deploy.crd_schema import default_crd_dir
from ctloop.components.deploy.inference_service import DeploymentError
from ctloop.components.deploy.serving_capacity import ServingCapacity, parse_serving_capacity

FULL = (
    '{"min_replicas": 1, "max_replicas": 4, "requests": {"cpu": "1", "memory": "2Gi"},'
    ' "limits": {"cpu": 2, "memory": "2Gi"}}'
)


def test_every_key_is_read():
    assert parse_serving_capacity(FULL) == ServingCapacity(
        min_replicas=1,
        max_replicas=4,
        resources={
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
    )


@pytest.mark.parametrize("text", ["", "  ", "{}"])
def test_nothing_given_leaves_everything_to_kserve(text):
    assert parse_serving_capacity(text) == ServingCapacity(None, None, None)


def test_scale_to_zero_is_allowed():
    assert parse_serving_capacity('{"min_replicas": 0, "max_replicas": 2}').min_replicas == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"min_replicas": 1,', "serving_capacity is not valid JSON"),
        ("[1, 4]", "serving_capacity must be a JSON object"),
        ('{"replicas": 2}', "serving_capacity has unknown key(s) ['replicas']"),
        ('{"min_replicas": -1}', "serving_capacity: min_replicas -1 must be >= 0"),
        ('{"max_replicas": "3"}', "serving_capacity: max_replicas '3' must be an integer"),
        ('{"min_replicas": true}', "serving_capacity: min_replicas True must be an integer"),
        (
            '{"min_replicas": 3, "max_replicas": 2}',
            "serving_capacity: max_replicas 2 is below min_replicas 3",
        ),
        ('{"requests": "1 cpu"}', "serving_capacity: requests must be an object"),
        ('{"limits": {}}', "serving_capacity: limits must be an object"),
        ('{"limits": {"cpu": [2]}}', "serving_capacity: limits.cpu = [2] must be a quantity"),
        ('{"limits": {"memory": "2GB"}}', 'limits.memory = "2GB" must be a quantity'),
        ('{"requests": {"cpu": "nan"}}', 'requests.cpu = "nan" must be a quantity'),
        ('{"requests": {"cpu": -1}}', "requests.cpu = -1 must be a quantity >= 0"),
        ('{"requests": {"cpu": ""}}', 'requests.cpu = "" must be a quantity'),
    ],
)
def test_wrong_capacity_is_refused_naming_the_key(text, message):
    with pytest.raises(DeploymentError) as raised:
        parse_serving_capacity(text)
    assert message in str(raised.value)


def test_rendered_inference_service_carries_the_capacity(tmp_path):
    if default_crd_dir() is None:
        pytest.skip("KServe CRDs not found: provide ../shared/kserve")
    request = rollout.RolloutRequest(
        name="churn",
        namespace="ml",
        model_artifact_uri="s3://models/churn/1",
        model_version="1",
        capacity=parse_serving_capacity(FULL),
    )

    outcome = rollout.render(request, str(tmp_path))

    assert outcome["validated_against_crd"] is True
    predictor = yaml.safe_load(open(outcome["inference_service_manifest"]))["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
