from pathlib import Path

from ctloop.pipelines.reference_docs import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_reference_matches_the_docstrings_kfp_compiles():
    assert reference_markdown() in README.read_text(), "README is stale: run `make docs`"


def test_readme_gives_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
