from pathlib import Path

from ctloop.pipelines.reference_docs import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"


def test_reference_matches_the_docstrings_kfp_compiles():
    assert REFERENCE.read_text() == reference_markdown(), "docs/reference.md is stale: `make docs`"


def test_readme_links_the_reference():
    assert "(docs/reference.md)" in README.read_text()


def test_readme_gives_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
