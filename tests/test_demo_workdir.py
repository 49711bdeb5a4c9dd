"""A rerun of the demo starts from an empty work directory and keeps the old one whole."""

import pytest

from ctloop.pipelines.demo import DemoWorkdirError, set_aside


def test_a_used_work_directory_is_kept_under_the_next_free_name(tmp_path):
    root = tmp_path / ".ctloop"
    root.mkdir()
    (root / "mlflow.db").write_text("registry")
    (tmp_path / ".ctloop.1").mkdir()  # an earlier one, left alone

    assert set_aside(root) == tmp_path / ".ctloop.2"
    assert not root.exists()
    assert (tmp_path / ".ctloop.2" / "mlflow.db").read_text() == "registry"
    assert (tmp_path / ".ctloop.1").is_dir()


def test_a_missing_or_empty_work_directory_is_left_as_it_is(tmp_path):
    assert set_aside(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert set_aside(tmp_path / "empty") is None
    assert (tmp_path / "empty").is_dir()


def test_a_folder_that_is_no_work_directory_or_holds_the_current_one_is_never_moved(
    tmp_path, monkeypatch
):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    with pytest.raises(DemoWorkdirError, match="not a ctloop work directory"):
        set_aside(project)
    (project / "mlflow.db").write_text("registry")
    monkeypatch.chdir(project / "src")
    with pytest.raises(DemoWorkdirError, match="is the folder the demo runs in"):
        set_aside(project)
    assert (project / "src").is_dir() and not (tmp_path / "project.1").exists()
