"""The `ctloop` command line: compile, run locally or on a KFP endpoint, and the demo."""

from __future__ import annotations

import argparse
import sys

from ctloop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctloop",
        description="Continuous training of tabular XGBoost models on Kubeflow and KServe.",
    )
    parser.add_argument("--version", action="version", version=f"ctloop {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
