"""Every overlay, applied server-side (dry run) to a real kube-apiserver with the CRDs it uses.

`kubectl apply --server-side --dry-run=server -k manifests/overlays/<env>` as an admin would
run it, against the run's API server (tests/envtest.py) with KServe's CRDs and
prometheus-operator's PodMonitor and PrometheusRule installed: each object goes through the
server's admission, defaulting and schema validation, and nothing is stored. The offline
checks of the same objects are in tests/test_manifests.py.

The two ServingRuntimes, which no overlay holds together (the Feast one is applied on its own
where models are deployed with a feature repository), are applied for real into one namespace,
read back, and applied again.
"""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests import envtest
from tests.test_serving_runtime_manifest import RUNTIMES, built_runtime

envtest.require_apiserver()
kube_apiserver = envtest.kube_apiserver  # a fixture: the run's API server
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
OVERLAYS = sorted(path.name for path in (MANIFESTS / "overlays").iterdir() if path.is_dir())


def apply_dry_run(server, kustomization: Path, *options: str):
    """The overlay's namespace created (a Kubeflow profile's exists already), then the apply."""
    namespace = yaml.safe_load((kustomization / "kustomization.yaml").read_text())["namespace"]
    server.create_namespace(namespace)
    return server.kubectl_run(
        server.admin,
        "apply",
        "--server-side",
        "--dry-run=server",
        *options,
        "-k",
        str(kustomization),
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_server_side_to_a_real_api_server(kube_apiserver, overlay):
    applied = apply_dry_run(kube_apiserver, MANIFESTS / "overlays" / overlay)

    assert applied.returncode == 0, applied.stderr
    assert sorted(line.split(" ")[0] for line in applied.stdout.splitlines()) == [
        "configmap/ctloop-predictor-dashboard",
        "podmonitor.monitoring.coreos.com/ctloop-predictor",
        "prometheusrule.monitoring.coreos.com/ctloop-predictor",
        "role.rbac.authorization.k8s.io/ctloop-deploy",
        "rolebinding.rbac.authorization.k8s.io/ctloop-deploy",
        "servingruntime.serving.kserve.io/ctloop-xgboost",
    ]
    assert all(line.endswith("(server dry run)") for line in applied.stdout.splitlines())


BROKEN = {  # manifest: (a line of it, the line made wrong, the field the server names)
    "monitoring/podmonitor.yaml": ("interval: 30s", "interval: 30", "podMetricsEndpoints.interval"),
    "monitoring/prometheusrule.yaml": ("for: 5m", "for: five minutes", "groups.rules.for"),
    "serving/runtime/servingruntime.yaml": (
        "autoSelect: false",
        "autoSelect: 2",
        "supportedModelFormats",
    ),
}


def test_the_server_refuses_what_each_crd_refuses(kube_apiserver, tmp_path):
    """The dry run is not vacuous: one wrong value in each custom kind fails the apply."""
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    for manifest, (line, wrong, _field) in BROKEN.items():
        text = (copy / manifest).read_text()
        assert line in text, f"{manifest} no longer has {line!r}"
        (copy / manifest).write_text(text.replace(line, wrong, 1))

    # kubectl's own check (against the schemas the server publishes, once it has) off: the
    # server's verdict is the one asked for
    applied = apply_dry_run(kube_apiserver, copy / "overlays" / "dev", "--validate=false")

    assert applied.returncode != 0
    refusals = re.sub(r"\[\d+\]", "", applied.stderr)  # servers after 1.20 index list items
    for _line, _wrong, field in BROKEN.values():
        assert f"is invalid: spec.{field}" in refusals  # the server's 422


def test_both_serving_runtimes_apply_in_one_namespace_as_built_and_again_change_nothing(
    kube_apiserver,
):
    """ctloop-xgboost and ctloop-xgboost-feast, each applied as its kustomization says
    (`kubectl apply -k manifests/serving/feast -n <ns>`), are stored side by side as built."""
    namespace = kube_apiserver.namespace("runtimes")
    admin = kube_apiserver.admin.custom_objects_api()

    def apply_both() -> dict[str, dict]:
        for folder, _image in RUNTIMES.values():
            applied = kube_apiserver.kubectl_run(
                kube_apiserver.admin,
                "apply",
                "--server-side",
                "-n",
                namespace,
                "-k",
                str(MANIFESTS / folder),
            )
            assert applied.returncode == 0, applied.stderr
        stored = admin.list_namespaced_custom_object(
            "serving.kserve.io", "v1alpha1", namespace, "servingruntimes"
        )["items"]
        return {runtime["metadata"]["name"]: runtime for runtime in stored}

    first = apply_both()

    assert sorted(first) == sorted(RUNTIMES)
    for name, (_folder, image) in RUNTIMES.items():
        built = built_runtime(name)
        assert first[name]["spec"] == built["spec"]
        assert first[name]["metadata"]["labels"] == built["metadata"]["labels"]
        [container] = first[name]["spec"]["containers"]
        assert container["image"] == image
    again = apply_both()
    assert {name: runtime["metadata"]["resourceVersion"] for name, runtime in again.items()} == {
        name: runtime["metadata"]["resourceVersion"] for name, runtime in first.items()
    }
