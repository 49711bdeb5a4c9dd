import argparse
import subprocess
import sys
from pathlib import Path

from ctloop import __version__
from ctloop.pipelines.cli import build_parser, main

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "ctloop")


def test_console_script_and_module_report_the_package_version():
    for command in ([CONSOLE_SCRIPT], [sys.executable, "-m", "ctloop"]):
        out = subprocess.run(command + ["--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"ctloop {__version__}"


def test_no_command_prints_the_help_and_exits_2_without_running_anything(capsys):
    assert main([]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: ctloop")
    assert "demo" in captured.err


def test_every_command_names_its_handler():
    [commands] = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]

    assert set(commands.choices) == {
        "compile",
        "run",
        "upload",
        "schedule",
        "serve",
        "promote",
        "rollback",
        "drift",
        "shadow-analysis",
        "ab-analysis",
        "audit",
        "replay",
        "demo",
    }
    for name, parser in commands.choices.items():
        assert callable(parser.get_default("handler")), name
