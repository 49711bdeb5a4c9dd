"""The GitHub Actions workflows, and the promise that nothing secret lands in compiled YAML.

What a `run:` line may be, precisely (anything else fails `test_every_run_line_is_allowed`):
- `make TARGET... [VAR=VALUE...]`, every target defined in the Makefile: what CI runs is what
  a developer runs;
- `ctloop SUBCOMMAND ...` (or `.venv/bin/ctloop`), SUBCOMMAND one the CLI has;
- one of the setup lines in `SETUP_LINES`: installing Debian packages by name, installing
  controller-runtime's setup-envtest (a release branch) and exporting the folder of the
  kube-apiserver and etcd it fetches as KUBEBUILDER_ASSETS, and writing the KFP token from the
  `KFP_TOKEN` environment variable to a file named by KF_PIPELINES_SA_TOKEN_PATH (and
  removing it).
A `run:` never holds a `${{ }}` expression (no secret is pasted into a shell line, no
untrusted text is interpolated); secrets reach steps only as whole `env:`/`with:` values.
"""

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from ctloop.pipelines.cli import build_parser, main
from ctloop.pipelines.schedule import check_cron

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
SETUP_LINES = [
    r"sudo apt-get update -qq",
    r"sudo apt-get install -y -qq --no-install-recommends( [a-z0-9][a-z0-9.+-]*)+",
    r"go install sigs\.k8s\.io/controller-runtime/tools/setup-envtest@release-0\.\d+",
    r"""echo "KUBEBUILDER_ASSETS=\$\(setup-envtest use -p path 1\.\d+\.x\)" >> "\$GITHUB_ENV\"""",
    r"umask 077",
    r"""printf '%s' "\$KFP_TOKEN" > "\$RUNNER_TEMP/kfp-token\"""",
    r"""echo "KF_PIPELINES_SA_TOKEN_PATH=\$RUNNER_TEMP/kfp-token" >> "\$GITHUB_ENV\"""",
    r"""rm -f "\$RUNNER_TEMP/kfp-token\"""",
]
SECRET = re.compile(r"^\$\{\{ secrets\.([A-Z][A-Z0-9_]*) \}\}$")
# Shapes of real credentials: GitHub, AWS, Slack and Google keys, JWTs (service-account
# tokens), PEM private keys, and user:password@ in URLs.
TOKEN_LIKE = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@"
)
SENSITIVE_NAME = re.compile(r"(?i)token|password|passwd|secret|credential|api_?key|host")


def _workflow(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on:` as true
    return workflow


@pytest.fixture(scope="module", params=["ci.yaml", "release.yaml"])
def workflow(request) -> dict:
    return _workflow(request.param)


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))


def _commands(script: str) -> list[str]:
    """Shell commands of a `run:` block: one per line, continuations joined, `&&` split."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [
        part.strip()
        for line in joined.splitlines()
        for part in line.split("&&")
        if part.strip() and not part.strip().startswith("#")
    ]


def _allowed(command: str) -> bool:
    if any(re.fullmatch(pattern, command) for pattern in SETUP_LINES):
        return True
    words = shlex.split(command)
    if words[0] == "make":
        targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        return bool(targets) and set(targets) <= _makefile_targets()
    if words[0] in ("ctloop", ".venv/bin/ctloop"):
        [commands] = [
            action
            for action in build_parser()._actions
            if isinstance(action, argparse._SubParsersAction)
        ]
        subcommands = commands.choices
        return len(words) > 1 and words[1] in subcommands
    return False


def test_workflows_parse_and_every_job_has_steps(workflow):
    assert workflow["name"] and workflow["on"]
    assert workflow["permissions"]["contents"] == "read"
    for job in workflow["jobs"].values():
        assert job["runs-on"].startswith("ubuntu-") and job["timeout-minutes"] > 0
        assert job["steps"]


def test_every_run_line_is_allowed(workflow):
    refused = [
        command
        for step in _steps(workflow)
        if "run" in step
        for command in _commands(step["run"])
        if not _allowed(command)
    ]
    assert refused == []


def test_no_run_line_holds_an_expression(workflow):
    for step in _steps(workflow):
        assert "${{" not in step.get("run", ""), step


def test_actions_are_pinned_to_a_release_or_commit(workflow):
    for step in _steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", step["uses"])


def test_secrets_come_only_from_secrets_into_env_or_with(workflow):
    text = yaml.safe_dump(workflow)
    for step in _steps(workflow):
        for section in ("env", "with"):
            for key, value in (step.get(section) or {}).items():
                value = str(value)
                if "secrets." in value:
                    assert SECRET.match(value), f"{key}: a secret must be the whole value"
                elif SENSITIVE_NAME.search(key):
                    assert value.startswith("${{ "), f"{key} holds a literal: {value!r}"
    assert TOKEN_LIKE.search(text) is None
    assert TOKEN_LIKE.search((WORKFLOWS / "ci.yaml").read_text()) is None
    assert TOKEN_LIKE.search((WORKFLOWS / "release.yaml").read_text()) is None


def test_pull_requests_are_checked_without_secrets_and_compiled_yaml_is_an_artifact():
    ci = _workflow("ci.yaml")
    steps = _steps(ci)
    runs = [step.get("run") for step in steps]

    assert set(ci["on"]) == {"pull_request"}
    assert "secrets." not in (WORKFLOWS / "ci.yaml").read_text()
    for target in ("make lint", "make test", "make compile", "make compile-vertex"):
        assert target in runs, target
    assert runs.index("make lint") < runs.index("make test") < runs.index("make compile")
    [artifact] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert artifact["with"]["path"].rstrip("/") == "build"
    assert "build/" in (REPO / ".gitignore").read_text().splitlines()  # compiled, not committed
    assert any(step.get("run") == "make images" for step in steps)


def test_release_pushes_images_then_uploads_pipelines_then_schedules_monitoring():
    release = _workflow("release.yaml")
    steps = _steps(release)
    order = [step.get("run", step.get("uses", "")).splitlines()[0] for step in steps]

    assert release["on"] == {"push": {"branches": ["main"]}}
    push, token = order.index("make push-images"), order.index("umask 077")
    upload, schedule = order.index("make upload"), order.index("make schedule")
    assert push < token < upload < schedule
    for index in (upload, schedule):
        assert steps[index]["env"]["KFP_HOST"] == "${{ secrets.KFP_HOST }}"
    check_cron(steps[schedule]["env"]["MONITORING_CRON"])
    assert steps[schedule]["env"]["MONITORING_CRON"] == "0 0 2 * * *"
    # The token is in the environment of the one step that writes it to a file, nowhere else.
    holders = [s for s in steps if "KFP_TOKEN" in (s.get("env") or {})]
    assert holders == [steps[token]]
    assert steps[token]["env"]["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert "KF_PIPELINES_SA_TOKEN_PATH=" in steps[token]["run"]
    assert steps[-1]["if"] == "always()" and steps[-1]["run"].startswith("rm -f")
    [login] = [s for s in steps if s.get("uses", "").startswith("docker/login-action@")]
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert release["permissions"]["packages"] == "write"


def test_make_upload_and_schedule_read_the_host_from_the_environment():
    """make echoes recipes: the endpoint stays a shell variable, never expanded into the log."""
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "upload", "schedule"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "KFP_HOST": "https://kfp.invalid"},
    )
    assert planned.returncode == 0, planned.stderr
    assert "kfp.invalid" not in planned.stdout
    assert 'upload --host "$KFP_HOST"' in planned.stdout
    assert 'schedule --host "$KFP_HOST" --cron "0 0 2 * * *"' in planned.stdout


def test_the_allow_list_refuses_what_it_should():
    assert not _allowed("curl -sSL https://example.invalid/install.sh | sh")
    assert not _allowed("make no-such-target")
    assert not _allowed("pip install ctloop")
    assert not _allowed('printf "%s" "hunter2" > token')
    assert _allowed("make setup")
    assert _allowed("ctloop compile --target vertex")


# Nothing secret in compiled YAML --------------------------------------------------------

SENTINEL = "sentinel-7f3a9c"


@pytest.fixture(scope="module")
def compiled_with_secrets_around(tmp_path_factory) -> Path:
    """Compile both targets with credentials in the environment, as a CI job would have."""
    out = tmp_path_factory.mktemp("build")
    token = out.parent / "token"
    token.write_text(f"eyJ{SENTINEL}abcdefghij.payload{SENTINEL}.signature")
    environment = {
        "KF_PIPELINES_SA_TOKEN_PATH": str(token),
        "KFP_TOKEN": SENTINEL,
        "KFP_HOST": f"https://{SENTINEL}.invalid",
        "MLFLOW_TRACKING_URI": f"https://user:{SENTINEL}@mlflow.invalid",
        "MLFLOW_TRACKING_TOKEN": SENTINEL,
        "MLFLOW_TRACKING_PASSWORD": SENTINEL,
        "AWS_ACCESS_KEY_ID": "AKIA" + "SENTINEL7F3A9C00",
        "AWS_SECRET_ACCESS_KEY": SENTINEL,
        "GOOGLE_APPLICATION_CREDENTIALS": str(token),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        assert main(["compile", "--output-dir", str(out)]) == 0
        assert main(["compile", "--target", "vertex", "--output-dir", str(out)]) == 0
    return out


def test_compiled_yaml_holds_no_secret_from_the_environment(compiled_with_secrets_around):
    files = sorted(compiled_with_secrets_around.rglob("*.yaml"))

    assert {p.parent.name for p in files} == {"pipelines", "components", "vertex"}
    for path in files:
        text = path.read_text()
        assert SENTINEL not in text and "AKIASENTINEL" not in text, path
        assert TOKEN_LIKE.search(text) is None, (path, TOKEN_LIKE.search(text))


def test_compiled_containers_set_no_secret_valued_environment(compiled_with_secrets_around):
    for path in sorted(compiled_with_secrets_around.rglob("*.yaml")):
        spec = next(yaml.safe_load_all(path.read_text()))
        environments = [
            e.get("container", {}).get("env", [])
            for e in spec["deploymentSpec"]["executors"].values()
        ]
        for component in spec.get("components", {}).values():
            pools = component.get("inputDefinitions", {}).get("parameters", {})
            for pool in pools.get("worker_pool_specs", {}).get("defaultValue", []):
                environments.append(pool["container_spec"].get("env", []))
        for variable in (v for env in environments for v in env):
            assert not SENSITIVE_NAME.search(variable["name"]), (path, variable["name"])
