"""`ctloop upload`: publish compiled pipelines to a KFP API v2beta1 stand-in on 127.0.0.1."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from ctloop.pipelines.cli import main
from ctloop.pipelines.compiler import compile_all

PIPELINES = "/apis/v2beta1/pipelines"
CREATED_AT = "2026-11-01T02:00:00Z"

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    compile_all(out)
    return out


def _serve(httpserver, *, pipeline_exists: bool, version_exists: bool) -> None:
    httpserver.expect_request("/apis/v2beta1/healthz").respond_with_json({"multi_user": False})
    pipeline = {"pipeline_id": "p-1", "display_name": "ctloop-training", "created_at": CREATED_AT}
    httpserver.expect_request(PIPELINES, method="GET").respond_with_json(
        {"pipelines": [pipeline], "total_size": 1} if pipeline_exists else {}
    )
    httpserver.expect_request(f"{PIPELINES}/upload", method="POST").respond_with_json(
        {**pipeline, "pipeline_id": "p-new"}
    )
    version = {
        "pipeline_id": "p-1",
        "pipeline_version_id": "pv-7",
        "display_name": "v9-abc",
        "created_at": CREATED_AT,
    }
    httpserver.expect_request(f"{PIPELINES}/p-1/versions", method="GET").respond_with_json(
        {"pipeline_versions": [version], "total_size": 1} if version_exists else {}
    )
    httpserver.expect_request(f"{PIPELINES}/upload_version", method="POST").respond_with_json(
        version
    )


def _posts(httpserver) -> list:
    return [request for request, _ in httpserver.log if request.method == "POST"]


def _upload(httpserver, build_dir, capsys) -> tuple[int, list[dict]]:
    code = main(
        [
            "upload",
            "--host",
            httpserver.url_for("").rstrip("/"),
            "--version",
            "v9-abc",
            "--build-dir",
            str(build_dir),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    return code, [json.loads(line) for line in lines]


def test_first_upload_creates_the_pipeline_from_the_compiled_yaml(httpserver, build_dir, capsys):
    _serve(httpserver, pipeline_exists=False, version_exists=False)
    code, outcomes = _upload(httpserver, build_dir, capsys)
    assert code == 0
    assert outcomes == [
        {"pipeline": "ctloop-training", "pipeline_id": "p-new", "action": "created"}
    ]
    [upload] = _posts(httpserver)
    assert urlsplit(upload.url).path == f"{PIPELINES}/upload"
    assert parse_qs(urlsplit(upload.url).query)["name"] == ["ctloop-training"]
    sent = upload.files["uploadfile"].read().decode()
    assert sent == (build_dir / "pipelines" / "training.yaml").read_text()


def test_later_upload_adds_a_named_version(httpserver, build_dir, capsys):
    _serve(httpserver, pipeline_exists=True, version_exists=False)
    code, [outcome] = _upload(httpserver, build_dir, capsys)
    assert code == 0 and outcome["action"] == "version-added"
    assert outcome["pipeline_version_id"] == "pv-7"
    [upload] = _posts(httpserver)
    query = parse_qs(urlsplit(upload.url).query)
    assert urlsplit(upload.url).path == f"{PIPELINES}/upload_version"
    assert query["pipelineid"] == ["p-1"] and query["name"] == ["v9-abc"]


def test_uploading_the_same_version_again_changes_nothing(httpserver, build_dir, capsys):
    _serve(httpserver, pipeline_exists=True, version_exists=True)
    code, [outcome] = _upload(httpserver, build_dir, capsys)
    assert code == 0 and outcome["action"] == "unchanged"
    assert _posts(httpserver) == []
    [lookup] = [r for r, _ in httpserver.log if r.path == f"{PIPELINES}/p-1/versions"]
    predicate = json.loads(parse_qs(urlsplit(lookup.url).query)["filter"][0])["predicates"][0]
    assert predicate == {"operation": "EQUALS", "key": "display_name", "stringValue": "v9-abc"}


def test_upload_without_compiled_pipelines_says_to_compile_first(tmp_path, capsys):
    code = main(["upload", "--host", "http://127.0.0.1:9", "--build-dir", str(tmp_path)])
    assert code == 2
    assert "run `ctloop compile` first" in capsys.readouterr().err


def test_default_version_names_package_and_commit():
    from ctloop import __version__
    from ctloop.pipelines.kfp_api import default_version_name

    name = default_version_name()
    assert name.startswith(f"v{__version__}")
