"""A rerun of the demo starts from an empty work directory and keeps the old one whole."""

from ctloop.pipelines.demo import set_aside


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
