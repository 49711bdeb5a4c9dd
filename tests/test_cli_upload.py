"""`ctloop upload`: publish compiled pipelines to a stateful KFP API v2beta1 stand-in."""

import json

import pytest
import yaml

from ctloop.pipelines.cli import main

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]


def _upload(kfp_api, build_dir, capsys, version: str = "v9-abc") -> tuple[int, list[dict]]:
    code = main(
        ["upload", "--host", kfp_api.host, "--version", version, "--build-dir", str(build_dir)]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    return code, [json.loads(line) for line in lines]


def _by_name(kfp_api) -> dict[str, str]:
    return {p["display_name"]: pid for pid, p in kfp_api.pipelines.items()}


def test_first_upload_creates_every_pipeline_from_its_compiled_yaml(
    kfp_api, compiled_pipelines, capsys
):
    code, outcomes = _upload(kfp_api, compiled_pipelines, capsys)
    assert code == 0
    assert [(o["pipeline"], o["action"]) for o in outcomes] == [
        ("ctloop-ab-analysis", "created"),
        ("ctloop-monitoring", "created"),
        ("ctloop-training", "created"),
    ]
    ids = _by_name(kfp_api)
    for name, file in (
        ("ctloop-training", "training"),
        ("ctloop-monitoring", "monitoring"),
        ("ctloop-ab-analysis", "ab-analysis"),
    ):
        [version] = kfp_api.versions[ids[name]]
        compiled = list(
            yaml.safe_load_all((compiled_pipelines / "pipelines" / f"{file}.yaml").read_text())
        )
        # The API server keeps a package's platform spec (kfp-kubernetes settings) beside it.
        stored = version["pipeline_spec"]
        if len(compiled) == 2:
            assert stored == {"pipeline_spec": compiled[0], "platform_spec": compiled[1]}
        else:
            assert stored == compiled[0]


def test_later_upload_adds_a_named_version_to_each_pipeline(kfp_api, compiled_pipelines, capsys):
    _upload(kfp_api, compiled_pipelines, capsys, version="v1")
    code, outcomes = _upload(kfp_api, compiled_pipelines, capsys, version="v2")
    assert code == 0 and {o["action"] for o in outcomes} == {"version-added"}
    for pipeline_id in _by_name(kfp_api).values():
        names = [v["display_name"] for v in kfp_api.versions[pipeline_id]]
        assert names[-1] == "v2" and len(names) == 2
    upload = [path for method, path in kfp_api.calls if method == "POST"][-1]
    assert upload == "/pipelines/upload_version"


def test_uploading_the_same_version_again_changes_nothing(kfp_api, compiled_pipelines, capsys):
    _upload(kfp_api, compiled_pipelines, capsys, version="v1")
    _upload(kfp_api, compiled_pipelines, capsys, version="v2")
    posts_before = [call for call in kfp_api.calls if call[0] == "POST"]
    code, outcomes = _upload(kfp_api, compiled_pipelines, capsys, version="v2")
    assert code == 0 and {o["action"] for o in outcomes} == {"unchanged"}
    assert [call for call in kfp_api.calls if call[0] == "POST"] == posts_before
    assert all(len(versions) == 2 for versions in kfp_api.versions.values())


def test_upload_without_compiled_pipelines_says_to_compile_first(tmp_path, capsys):
    code = main(["upload", "--host", "http://127.0.0.1:9", "--build-dir", str(tmp_path)])
    assert code == 2
    assert "run `ctloop compile` first" in capsys.readouterr().err


def test_default_version_names_package_and_commit():
    from ctloop import __version__
    from ctloop.pipelines.kfp_api import default_version_name

    name = default_version_name()
    assert name.startswith(f"v{__version__}")
