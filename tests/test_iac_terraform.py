"""The GKE node pools of manifests/terraform/ take exactly the pods the compiled pipelines place.

The Terraform is read with the HCL parser checkov itself uses (bc-python-hcl2, in the
`.venv-iac` tool environment of requirements-tool-iac.lock, which `make test` installs), and the
pools' labels and taints are matched against pipelines/placement.py the way the scheduler
matches them: the train step on the GPU pool, on the spot GPU pool with `--spot gke`, every
other step on the CPU pool only. checkov scans the same files for misconfigurations. The
GitHub workflow runs what cannot run here: `terraform fmt -check` and `terraform validate`.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ctloop.pipelines.placement import SPOT_POOLS, GpuPlacement, Toleration

REPO = Path(__file__).resolve().parents[1]
TERRAFORM = REPO / "manifests" / "terraform"
GPU_OPERATOR = REPO / "manifests" / "gpu-operator"
TOOLS = REPO / ".venv-iac" / "bin"
EFFECTS = {  # Terraform's taint effects, as Kubernetes spells them
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}
REQUIRED = {  # the variables without a default, as a user's tfvars would set them
    "project_id": "ctloop-test",
    "location": "us-central1",
    "cluster_name": "ctloop",
    "node_service_account": "ctloop-nodes@ctloop-test.iam.gserviceaccount.com",
    "gpu_node_locations": ["us-central1-a", "us-central1-b"],
}
# GKE labels every Spot VM node itself; the pool's own labels need not say it.
GKE_SPOT_LABEL = {"cloud.google.com/gke-spot": "true"}


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} is missing: `make integrations` installs requirements-tool-iac.lock")
    return path


def parsed_terraform(folder: Path) -> dict:
    """Every .tf file of `folder` as the HCL parser reads it, blocks of a kind merged."""
    script = (
        "import json, pathlib, sys, hcl2\n"
        "merged = {}\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.tf')):\n"
        "    for kind, blocks in hcl2.loads(path.read_text()).items():\n"
        "        merged.setdefault(kind, []).extend(blocks)\n"
        "print(json.dumps(merged))\n"
    )
    parsed = subprocess.run(
        [tool("python"), "-c", script, folder], capture_output=True, text=True, check=True
    )
    return json.loads(parsed.stdout)


def _one(value):
    """The parser wraps each attribute's value in a list of one."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


@pytest.fixture(scope="module")
def terraform() -> dict:
    return parsed_terraform(TERRAFORM)


@pytest.fixture(scope="module")
def variables(terraform) -> dict:
    declared = {name: body for block in terraform["variable"] for name, body in block.items()}
    values = {name: _one(body["default"]) for name, body in declared.items() if "default" in body}
    assert set(declared) - set(values) == set(REQUIRED)
    return {**values, **REQUIRED, "_declared": declared}


@pytest.fixture(scope="module")
def pools(terraform, variables) -> dict:
    """The pools as Terraform plans them with the default variables: `local.pools` with each
    `${var.X}` and `${local.X}` resolved."""
    local = {name: _one(value) for block in terraform["locals"] for name, value in block.items()}

    def resolve(value):
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        reference = re.fullmatch(r"\$\{(var|local)\.(\w+)\}", str(value))
        if reference:
            kind, name = reference.groups()
            return resolve((variables if kind == "var" else local)[name])
        return value

    return resolve(local["pools"])


def node_pool_resource(terraform) -> dict:
    [block] = [b["google_container_node_pool"] for b in terraform["resource"]]
    return block["pool"]


def schedulable(pools: dict, selector: dict, tolerations) -> set[str]:
    """The pools a pod with this node selector and these tolerations can be scheduled on."""

    def tolerated(taint) -> bool:
        effect = EFFECTS[taint["effect"]]
        return any(
            t.key == taint["key"]
            and t.effect == effect
            and (t.operator == "Exists" or t.value == taint["value"])
            for t in tolerations
        )

    found = set()
    for name, pool in pools.items():
        labels = {**pool["labels"], **(GKE_SPOT_LABEL if pool["spot"] else {})}
        if selector.items() <= labels.items() and all(map(tolerated, pool["taints"])):
            found.add(name)
    return found


def test_the_pools_are_one_resource_each_made_from_its_entry_of_local_pools(terraform, pools):
    pool = node_pool_resource(terraform)
    config = _one(pool["node_config"])

    assert set(pools) == {"cpu", "gpu", "gpu-spot"}
    assert _one(pool["for_each"]) == "${local.pools}"
    assert _one(config["labels"]) == "${each.value.labels}"
    assert _one(config["spot"]) == "${each.value.spot}"
    [taint] = [d["taint"] for d in config["dynamic"] if "taint" in d]
    assert _one(taint["for_each"]) == "${each.value.taints}"


def test_the_train_step_lands_on_the_gpu_pool_and_with_spot_on_the_spot_gpu_pool(pools):
    train = GpuPlacement()
    spot_selector, spot_tolerations = SPOT_POOLS["gke"]

    assert schedulable(pools, train.node_selector, train.tolerations) == {"gpu"}
    assert schedulable(
        pools, {**train.node_selector, **spot_selector}, (*train.tolerations, *spot_tolerations)
    ) == {"gpu-spot"}


def test_every_other_step_lands_on_the_cpu_pool_only(pools):
    """A step that tolerates nothing never holds a GPU node (nor a preemptible one)."""
    assert schedulable(pools, {}, ()) == {"cpu"}
    assert schedulable(pools, {}, (Toleration("cloud.google.com/gke-spot", "Equal", "true"),)) == {
        "cpu"
    }


def test_gpu_pools_carry_the_accelerators_the_train_step_asks_for(terraform, pools, variables):
    config = _one(node_pool_resource(terraform)["node_config"])
    [accelerator] = [d["guest_accelerator"] for d in config["dynamic"] if "guest_accelerator" in d]
    driver = _one(_one(accelerator["content"])["gpu_driver_installation_config"])

    assert GpuPlacement().accelerator_type == "nvidia.com/gpu"
    for name in ("gpu", "gpu-spot"):
        assert pools[name]["accelerator_count"] >= GpuPlacement().accelerator_count
        assert pools[name]["min_nodes"] == 0  # no GPU is paid for while nothing trains
        # the GPU operator's device plugin is the only one advertising nvidia.com/gpu
        assert pools[name]["labels"]["gke-no-default-nvidia-gpu-device-plugin"] == "true"
    assert pools["cpu"]["accelerator_count"] == 0
    assert _one(driver["gpu_driver_version"]) == "INSTALLATION_DISABLED"
    assert re.fullmatch(r"nvidia-[a-z0-9-]+", variables["gpu_accelerator_type"])


def test_the_mig_layouts_terraform_allows_are_those_the_gpu_operator_is_given(pools, variables):
    layouts = yaml.safe_load((GPU_OPERATOR / "mig-parted-config.yaml").read_text())
    values = yaml.safe_load((GPU_OPERATOR / "values.yaml").read_text())
    kustomization = yaml.safe_load((GPU_OPERATOR / "kustomization.yaml").read_text())
    [generated] = kustomization["configMapGenerator"]
    [condition] = _one(variables["_declared"]["mig_config"]["validation"])["condition"]
    allowed = re.findall(r"'([^']+)'", condition)

    assert sorted(allowed) == sorted(layouts["mig-configs"])
    for name in ("gpu", "gpu-spot"):
        assert pools[name]["labels"]["nvidia.com/mig.config"] == variables["mig_config"]
    assert values["migManager"]["config"]["name"] == generated["name"]
    assert generated["files"] == ["config.yaml=mig-parted-config.yaml"]  # the key mig-parted reads
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    assert values["migManager"]["config"]["default"] in layouts["mig-configs"]
    # MIG slices are advertised as nvidia.com/gpu, the resource the train step asks for
    assert values["mig"]["strategy"] == "single"


# checkov ------------------------------------------------------------------------------------


def checkov(folder: Path) -> dict:
    """checkov's Terraform scan of `folder` (offline: --skip-download)."""
    scanned = subprocess.run(
        [tool("checkov"), "-d", folder, "--framework", "terraform", "--skip-download"]
        + ["--output", "json"],
        capture_output=True,
        text=True,
    )
    assert scanned.returncode in (0, 1), scanned.stderr[-2000:]
    return json.loads(scanned.stdout)


def test_checkov_finds_no_misconfiguration_in_the_node_pools():
    report = checkov(TERRAFORM)

    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] == 3
    assert report["results"]["failed_checks"] == []
    passed = {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}
    for pool in ("cpu", "gpu", "gpu-spot"):  # shielded nodes, metadata server, auto-repair
        for check in ("CKV_GCP_68", "CKV_GCP_69", "CKV_GCP_9"):
            assert (check, f'google_container_node_pool.pool["{pool}"]') in passed


def test_checkov_refuses_gpu_nodes_without_secure_boot(tmp_path):
    """The scan is not vacuous: one weakened setting fails it, on every pool."""
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy)
    pools = copy / "node_pools.tf"
    pools.write_text(
        pools.read_text().replace(
            "enable_secure_boot          = true", "enable_secure_boot = false"
        )
    )

    failed = {(c["check_id"], c["resource"]) for c in checkov(copy)["results"]["failed_checks"]}

    assert failed == {
        ("CKV_GCP_68", f'google_container_node_pool.pool["{pool}"]')
        for pool in ("cpu", "gpu", "gpu-spot")
    }


# the workflow that runs terraform -----------------------------------------------------------


def test_the_workflow_checks_formatting_and_validates_the_terraform():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "terraform.yaml").read_text())
    [job] = workflow["jobs"].values()
    runs = [step["run"] for step in job["steps"] if "run" in step]
    uses = [step["uses"] for step in job["steps"] if "uses" in step]

    assert workflow["permissions"] == {"contents": "read"}
    assert "manifests/terraform/**" in workflow[True]["pull_request"]["paths"]  # YAML 1.1's `on`
    assert job["defaults"]["run"]["working-directory"] == "manifests/terraform"
    assert runs == ["terraform fmt -check -recursive -diff", "terraform init -backend=false"] + [
        "terraform validate"
    ]
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+){0,2}", action)
    assert any(action.startswith("hashicorp/setup-terraform@") for action in uses)
