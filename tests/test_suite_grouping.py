"""How `make test` spreads the suite over pytest-xdist workers (tests/conftest.py), checked on
a small suite run with the Makefile's own flags: every module on one worker, and every test of
an expensive session fixture on one worker, which builds the fixture once. Under pytest 9.2,
xdist 3.8 ignored the groups without a word (pytest-dev/pytest-xdist#1386), and each worker
would have built the training loop again."""

import re
import shlex
from collections import defaultdict
from pathlib import Path

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent

LOOP_USERS = """
import pytest

@pytest.fixture(scope="session")
def training_loop():
    return "built"

def test_one(training_loop):
    pass

def test_two(training_loop):
    pass
"""

PLAIN = """
def test_one():
    pass

def test_two():
    pass

def test_three():
    pass
"""


def _make_test_flags() -> list[str]:
    """The pytest flags of the Makefile's `test` recipe, with two workers."""
    recipe = re.search(
        r"^test:.*\n\t\$\(PY\) -m pytest (.+)$", (TESTS.parent / "Makefile").read_text(), re.M
    )
    flags = shlex.split(recipe.group(1))
    flags[flags.index("-n") + 1] = "2"
    return flags


def test_each_module_and_each_training_loop_test_runs_on_one_worker(pytester):
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(
        test_loop_a=LOOP_USERS,
        test_loop_b=LOOP_USERS + PLAIN.replace("test_", "test_plain_"),
        test_plain_c=PLAIN,
        test_plain_d=PLAIN,
    )

    result = pytester.runpytest_subprocess(*_make_test_flags(), "-vv", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=13)
    workers = defaultdict(set)
    for worker, test in re.findall(r"^\[(gw\d)\] .*PASSED (\S+)", result.stdout.str(), re.M):
        loop = "training_loop" in test.split("@")[-1]
        workers["training_loop" if loop else test.split("::")[0]].add(worker)
    assert {group: len(found) for group, found in workers.items()} == {
        "training_loop": 1,
        "test_loop_b.py": 1,
        "test_plain_c.py": 1,
        "test_plain_d.py": 1,
    }
    assert len(set().union(*workers.values())) == 2  # and the work was spread
