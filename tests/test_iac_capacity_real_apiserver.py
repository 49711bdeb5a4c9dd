"""Each environment's quota and container defaults (manifests/overlays/ENV/capacity), enforced by
a real kube-apiserver (tests/envtest.py): its LimitRanger and ResourceQuota admission.

The train step's pod, shaped as pipelines/placement.py asks for it, must be admitted in every
environment, as many times as the environment has GPUs and not once more; a step that sets no
resources gets the defaults; and the NVIDIA GPU operator's prerequisites (manifests/gpu-operator)
apply as committed.
"""

import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from ctloop.pipelines.placement import GpuPlacement
from tests import envtest

envtest.require_apiserver()
kube_apiserver = envtest.kube_apiserver  # a fixture: the run's API server
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
ENVIRONMENTS = sorted(path.name for path in (MANIFESTS / "overlays").iterdir() if path.is_dir())


def built(server, kustomization: Path) -> list[dict]:
    rendered = subprocess.run(
        [server.kubectl, "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(yaml.safe_load_all(rendered.stdout))


def apply(server, kustomization: Path, *options: str) -> subprocess.CompletedProcess:
    return server.kubectl_run(
        server.admin, "apply", "--server-side", *options, "-k", str(kustomization)
    )


def train_pod(name: str) -> client.V1Pod:
    """A pod with the train step's requests and limits (KFP sets them on its main container)."""
    placement = GpuPlacement()
    resources = client.V1ResourceRequirements(
        requests={"cpu": placement.cpu_request, "memory": placement.memory_request},
        limits={
            "memory": placement.memory_limit,
            placement.accelerator_type: str(placement.accelerator_count),
        },
    )
    return _pod(name, resources)


def _pod(name: str, resources: client.V1ResourceRequirements | None = None) -> client.V1Pod:
    container = client.V1Container(name="main", image="ctloop:test", resources=resources)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[container], automount_service_account_token=False),
    )


@pytest.fixture
def environment(kube_apiserver, request):
    """A fresh namespace holding `request.param`'s quota and limit range, as a cluster admin
    creates them, with the quota's status written as the controller manager (not running
    here) would, nothing used yet: the ResourceQuota admission refuses every pod while a quota
    has none."""
    namespace = kube_apiserver.namespace(f"capacity-{request.param}")
    admin = kube_apiserver.admin.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
    )
    objects = built(kube_apiserver, MANIFESTS / "overlays" / request.param / "capacity")
    [quota] = [o for o in objects if o["kind"] == "ResourceQuota"]
    [limits] = [o for o in objects if o["kind"] == "LimitRange"]
    for body in (quota, limits):
        body["metadata"]["namespace"] = namespace
    core.create_namespaced_limit_range(namespace, limits)
    core.create_namespaced_resource_quota(namespace, quota)
    hard = quota["spec"]["hard"]
    core.patch_namespaced_resource_quota_status(
        quota["metadata"]["name"],
        namespace,
        {"status": {"hard": hard, "used": {resource: "0" for resource in hard}}},
    )
    return core, namespace, quota


@pytest.mark.parametrize("environment_name", ENVIRONMENTS)
def test_capacity_applies_server_side_to_a_real_api_server(kube_apiserver, environment_name):
    kustomization = MANIFESTS / "overlays" / environment_name / "capacity"
    namespace = yaml.safe_load((kustomization / "kustomization.yaml").read_text())["namespace"]
    kube_apiserver.create_namespace(namespace)

    applied = apply(kube_apiserver, kustomization, "--dry-run=server")

    assert applied.returncode == 0, applied.stderr
    assert sorted(line.split(" ")[0] for line in applied.stdout.splitlines()) == [
        "limitrange/ctloop-container-defaults",
        "resourcequota/ctloop-compute",
    ]


@pytest.mark.parametrize("environment", ENVIRONMENTS, indirect=True)
def test_as_many_train_steps_run_as_the_environment_has_gpus(environment):
    core, namespace, quota = environment
    gpus = int(quota["spec"]["hard"]["requests.nvidia.com/gpu"])

    for number in range(gpus):
        admitted = core.create_namespaced_pod(namespace, train_pod(f"train-{number}"))
        assert admitted.spec.containers[0].resources.requests["nvidia.com/gpu"] == "1"
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, train_pod("train-one-too-many"))

    assert refused.value.status == 403
    assert "exceeded quota: ctloop-compute" in refused.value.body
    assert f"limited: requests.nvidia.com/gpu={gpus}" in refused.value.body


@pytest.mark.parametrize("environment", ENVIRONMENTS, indirect=True)
def test_a_step_that_sets_no_resources_gets_the_defaults_and_counts_against_the_quota(environment):
    core, namespace, quota = environment

    admitted = core.create_namespaced_pod(namespace, _pod("validate"))

    resources = admitted.spec.containers[0].resources
    assert resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert resources.limits == {"memory": "2Gi"}
    used = core.read_namespaced_resource_quota(quota["metadata"]["name"], namespace).status.used
    assert used["pods"] == "1" and used["requests.memory"] == "512Mi"


@pytest.mark.parametrize("environment", ENVIRONMENTS, indirect=True)
def test_a_container_over_the_memory_ceiling_is_refused(environment):
    core, namespace, _quota = environment
    greedy = client.V1ResourceRequirements(requests={"memory": "1Gi"}, limits={"memory": "65Gi"})

    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, _pod("greedy", greedy))

    assert refused.value.status == 403
    assert "maximum memory usage per Container is 64Gi" in refused.value.body


def test_the_gpu_operator_prerequisites_apply_as_committed(kube_apiserver):
    kube_apiserver.create_namespace("gpu-operator")  # a dry run creates no namespace to apply in

    applied = apply(kube_apiserver, MANIFESTS / "gpu-operator", "--dry-run=server")

    assert applied.returncode == 0, applied.stderr
    assert sorted(line.split(" ")[0] for line in applied.stdout.splitlines()) == [
        "configmap/ctloop-mig-parted-config",
        "namespace/gpu-operator",
        "resourcequota/gpu-operator-quota",
    ]
