"""The code version every decision and registered version names."""

import subprocess

from ctloop import __version__
from ctloop.components import lineage


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_a_checkout_gives_its_head_and_whether_tracked_files_changed(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert lineage._checkout_commit(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert lineage._checkout_commit(tmp_path) == (head, True)


def test_no_checkout_gives_no_commit_rather_than_a_guess(tmp_path):
    assert lineage._checkout_commit(tmp_path) == (None, None)


def test_the_image_build_argument_wins_over_the_checkout(monkeypatch):
    monkeypatch.setenv(lineage.GIT_COMMIT_ENV, "0123abc")
    lineage.code_version.cache_clear()
    try:
        assert lineage.code_version() == {
            "ctloop_version": __version__,
            "git_commit": "0123abc",
            "dirty": None,
        }
    finally:
        lineage.code_version.cache_clear()
