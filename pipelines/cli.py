"""The `ctloop` command line: compile, run (locally or on a KFP endpoint), and the demo."""

import argparse
import contextlib
import json
import sys

from ctloop import __version__
from ctloop.components.image import DEFAULT_IMAGE


def _add_compile(commands) -> None:
    parser = commands.add_parser(
        "compile",
        help="compile every pipeline and component to YAML",
        description="Write build/pipelines/training.yaml and build/components/<name>.yaml.",
    )
    parser.add_argument("--output-dir", default="build")
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help="image of every component (pinned tag or digest)"
    )
    parser.add_argument(
        "--accelerator-type",
        default="nvidia.com/gpu",
        help="accelerator resource the train step asks for",
    )
    parser.add_argument(
        "--accelerator-count",
        type=int,
        default=1,
        help="accelerators for the train step (0: CPU only)",
    )
    parser.add_argument(
        "--node-selector",
        action="append",
        metavar="KEY=VALUE",
        help="node label the train step requires (repeatable; default nvidia.com/gpu.present=true)",
    )
    parser.add_argument(
        "--toleration",
        action="append",
        metavar="KEY[=VALUE][:EFFECT]",
        help="taint the train step tolerates (repeatable; default nvidia.com/gpu:NoSchedule)",
    )


def _add_run(commands) -> None:
    parser = commands.add_parser(
        "run", help="run a pipeline locally (default) or on a KFP endpoint (--host)"
    )
    parser.add_argument("pipeline", choices=["training"])
    parser.add_argument("--data", required=True, help="training table URI (Parquet or CSV)")
    parser.add_argument("--target", required=True, help="label column")
    parser.add_argument("--workdir", default=".ctloop", help="local run folder (MLflow, outputs)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter (repeatable), typed by the pipeline",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on the last line"
    )
    parser.add_argument("--host", help="KFP endpoint: submit the run there instead")
    parser.add_argument("--experiment", default="ctloop", help="KFP experiment (with --host)")


def _add_schedule(commands) -> None:
    parser = commands.add_parser(
        "schedule",
        help="create or update the recurring monitoring run on a KFP endpoint",
        description="Create the recurring run of the newest uploaded version of PIPELINE, or "
        "replace it when the cron, version or parameters changed (a rerun with the same "
        "arguments changes nothing). Enabled, one run at a time, no catch-up.",
    )
    parser.add_argument("--host", required=True, help="KFP endpoint")
    parser.add_argument(
        "--cron", help='six fields, seconds first, UTC (e.g. "0 0 2 * * *" = 02:00 daily)'
    )
    parser.add_argument("--experiment", default="ctloop", help="KFP experiment of the runs")
    parser.add_argument("--pipeline", default="ctloop-monitoring", help="uploaded pipeline")
    parser.add_argument("--name", default="ctloop-monitoring", help="name of the schedule")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter (repeatable), typed by the uploaded version",
    )
    change = parser.add_mutually_exclusive_group()
    for action in ("pause", "resume", "delete"):
        change.add_argument(
            f"--{action}",
            dest="change",
            action="store_const",
            const=action,
            help=f"{action} the existing schedule instead",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctloop",
        description="Continuous training of tabular XGBoost models on Kubeflow and KServe.",
    )
    parser.add_argument("--version", action="version", version=f"ctloop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_compile(commands)
    _add_run(commands)
    upload = commands.add_parser(
        "upload",
        help="publish every compiled pipeline to a KFP endpoint (create, or add a version)",
    )
    upload.add_argument("--host", required=True, help="KFP endpoint")
    upload.add_argument("--version", help="version name (default: v<package>-<git commit>)")
    upload.add_argument("--build-dir", default="build", help="where `ctloop compile` wrote")
    _add_schedule(commands)
    demo = commands.add_parser("demo", help="the whole training loop locally, twice")
    demo.add_argument("--workdir", default=".ctloop")
    demo.add_argument("--build-dir", default="build")
    return parser


def _compile(args) -> int:
    from ctloop.pipelines.compiler import compile_all
    from ctloop.pipelines.placement import GpuPlacement, Toleration

    defaults = GpuPlacement()
    selectors = dict(pair.split("=", 1) for pair in args.node_selector or [])
    placement = GpuPlacement(
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
        node_selector=selectors if args.node_selector else defaults.node_selector,
        tolerations=tuple(Toleration.parse(t) for t in args.toleration)
        if args.toleration
        else defaults.tolerations,
    )
    for path in compile_all(args.output_dir, image=args.image, placement=placement):
        print(path)
    return 0


def _run(args) -> int:
    from ctloop.pipelines.parameters import check_training_arguments, parse_params
    from ctloop.pipelines.training import build_training_pipeline

    pipeline = build_training_pipeline()
    arguments = parse_params(pipeline, args.param)
    check_training_arguments(arguments)
    if args.host:
        from ctloop.pipelines.kfp_api import kfp_client

        with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links
            run = kfp_client(args.host).create_run_from_pipeline_func(
                pipeline,
                arguments={"data_uri": args.data, "target": args.target, **arguments},
                experiment_name=args.experiment,
            )
        summary = {"run_id": run.run_id, "host": args.host}
    else:
        from ctloop.pipelines.local_run import run_training

        log_stream = sys.stderr if args.json else None  # keep stdout for the JSON line
        summary = run_training(args.data, args.target, args.workdir, arguments, log_stream)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _upload(args) -> int:
    from ctloop.pipelines.kfp_api import default_version_name, publish_compiled

    with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links: keep stdout JSON
        outcomes = publish_compiled(
            args.host, args.build_dir, args.version or default_version_name()
        )
    for outcome in outcomes:
        print(json.dumps(outcome, sort_keys=True))
    return 0


def _schedule(args) -> int:
    from ctloop.pipelines.kfp_api import kfp_client
    from ctloop.pipelines.schedule import (
        ScheduleError,
        change_schedule,
        check_cron,
        upsert_schedule,
    )

    if args.change and (args.cron or args.param):
        raise ScheduleError(f"--{args.change} takes no --cron or --param")
    if not args.change and not args.cron:
        raise ScheduleError('--cron is required to create or update a schedule, e.g. "0 0 2 * * *"')
    if args.cron:
        check_cron(args.cron)  # before any request
    with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links: keep stdout JSON
        client = kfp_client(args.host)
        if args.change:
            outcome = change_schedule(
                client, name=args.name, experiment=args.experiment, action=args.change
            )
        else:
            outcome = upsert_schedule(
                client,
                name=args.name,
                pipeline_name=args.pipeline,
                experiment=args.experiment,
                cron=args.cron,
                param_pairs=args.param,
            )
    print(json.dumps(outcome, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "compile":
            return _compile(args)
        if args.command == "run":
            return _run(args)
        if args.command == "upload":
            return _upload(args)
        if args.command == "schedule":
            return _schedule(args)
        from ctloop.pipelines.demo import run_demo

        return run_demo(args.workdir, args.build_dir)
    except ValueError as error:
        print(f"ctloop {args.command}: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"ctloop {args.command}: {error}", file=sys.stderr)
        return 1
