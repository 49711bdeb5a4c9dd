"""The `ctloop` command line: compile, run (locally or on a KFP endpoint), serve, and the demo.

Each subcommand lives beside its handler in `cli_pipelines` (commands that build and submit
pipelines), `cli_models` (commands that work on one trained model) or `cli_rollout` (the
rollout's decisions); this module only assembles the parser and turns the two error families
into exit codes: ValueError (bad input) exits 2, RuntimeError (a failing environment) exits 1.
"""

import argparse
import json
import os
import sys

from ctloop import __version__
from ctloop.pipelines import cli_audit, cli_models, cli_pipelines, cli_rollout

# In the order `ctloop --help` lists them.
_COMMANDS = (
    cli_pipelines.add_compile,
    cli_pipelines.add_run,
    cli_pipelines.add_upload,
    cli_pipelines.add_schedule,
    cli_models.add_serve,
    cli_models.add_promote,
    cli_models.add_rollback,
    cli_models.add_drift,
    cli_rollout.add_shadow_analysis,
    cli_rollout.add_ab_analysis,
    cli_audit.add_commands,
    cli_pipelines.add_demo,
)

MLFLOW_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
"""MLflow's own limits where the user set none, for the commands and the steps of local runs
(which inherit this environment); the component image sets the same for steps on a cluster.
MLflow's defaults, 120 s a try and seven retries with backoff, keep a command waiting a quarter
of an hour on a server that never answers."""

MLFLOW_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
"""No MLflow progress bar per artifact read: `ctloop audit`, `replay` and the demo's end read
one small decision record at a time, and a bar for each buried their answer."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctloop",
        description="Continuous training of tabular XGBoost models on Kubeflow and KServe.",
    )
    parser.add_argument("--version", action="version", version=f"ctloop {__version__}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:  # no subcommand: say what there is, as argparse does for bad usage
        parser.print_help(sys.stderr)
        return 2
    for name, value in {**MLFLOW_HTTP_LIMITS, **MLFLOW_QUIET}.items():
        os.environ.setdefault(name, value)
    if args.command == "compile":
        # KFP names the nested pipelines' branches in the order protobuf iterates maps, and
        # the default (upb) backend's order differs from one process to the next: two runs of
        # `ctloop compile` on the same source wrote different monitoring.yaml. The pure-Python
        # backend keeps insertion order (0.5 s slower a compile). It is read when protobuf is
        # first imported, which nothing imported so far has done.
        os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    try:
        return args.handler(args)
    except ValueError as error:
        return _failed(args, error, 2)
    except RuntimeError as error:
        return _failed(args, error, getattr(error, "exit_code", 1))  # a signal: 128 + its number


def _failed(args, error: Exception, code: int) -> int:
    """Say why on stderr; with `--json` (`json_summary`), also as the JSON line on stdout that a
    script reads, which would otherwise get nothing."""
    print(f"ctloop {args.command}: {error}", file=sys.stderr)
    if getattr(args, "json_summary", False):
        print(json.dumps({"error": f"{error}", "exit_code": code}, sort_keys=True))
    return code
