"""The `ctloop` command line: compile, run (locally or on a KFP endpoint), serve, and the demo."""

import argparse
import contextlib
import json
import os
import sys

from ctloop import __version__
from ctloop.components.image import DEFAULT_IMAGE


def _add_compile(commands) -> None:
    parser = commands.add_parser(
        "compile",
        help="compile every pipeline and component to YAML",
        description="Write build/pipelines/{training,monitoring}.yaml and "
        "build/components/<name>.yaml for Kubeflow Pipelines; with --target vertex, "
        "build/vertex/training.yaml for Vertex AI Pipelines (the train step a CustomJob).",
    )
    parser.add_argument("--output-dir", default="build")
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help="image of every component (pinned tag or digest)"
    )
    parser.add_argument(
        "--target",
        choices=["kfp", "vertex"],
        default="kfp",
        help="kfp: Kubeflow Pipelines on Kubernetes (default); vertex: Vertex AI Pipelines",
    )
    parser.add_argument(
        "--accelerator-type",
        help="accelerator the train step asks for (default: nvidia.com/gpu for kfp, "
        "NVIDIA_TESLA_T4 for vertex)",
    )
    parser.add_argument(
        "--machine-type",
        help="vertex: machine of the train step's CustomJob (default: n1-standard-8)",
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
    parser.add_argument("pipeline", choices=["training", "monitoring"])
    parser.add_argument("--data", help="training: the training table URI (Parquet or CSV)")
    parser.add_argument(
        "--current", help="monitoring: the production window URI (may hold {date} fields)"
    )
    parser.add_argument(
        "--reference",
        help="monitoring: the champion's training data, extended with the window on retraining",
    )
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


def _add_serve(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a model with ctloop's KServe predictor (loopback by default)",
        description="Serve a model folder or MLflow model over KServe's v1 and v2 REST APIs "
        "(/v1/models/NAME:predict, /v2/models/NAME/infer, /metrics) until interrupted.",
    )
    parser.add_argument(
        "--model-uri",
        required=True,
        help="model folder (model.json + reference_profile.json, or an MLflow model), "
        "file:// URI, or MLflow models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH",
    )
    parser.add_argument(
        "--name",
        default="ctloop-model",
        help="model name in the URLs (default: %(default)s, the InferenceService's default)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (%(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (%(default)s)")
    parser.add_argument(
        "--version", help="version to report (default: version.txt or the registry's, else unknown)"
    )
    parser.add_argument(
        "--max-batch-rows", type=int, default=10_000, help="most rows a request (%(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="scoring threads for batches over 50 rows (default: the CPUs it may use)",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        help="MLflow server for models:/ and runs:/ URIs (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--request-logs",
        action="store_true",
        help="log a line per request (off by default: it costs ~0.2 ms of CPU a request)",
    )


def _add_drift(commands) -> None:
    parser = commands.add_parser(
        "drift",
        help="compare a current table with a reference table for drift (exit 0 either way)",
        description="Measure every feature of --current against the reference profile (built "
        "from --reference, read from --profile, or the model's with --model-uri, which also "
        "scores both tables for prediction drift) and write the figures and a report.",
    )
    parser.add_argument("--reference", required=True, help="reference table (Parquet or CSV)")
    parser.add_argument("--current", required=True, help="table checked for drift")
    parser.add_argument("--target", default="", help="label column, never compared as a feature")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profile", default="", help="reference profile JSON to use instead")
    source.add_argument(
        "--model-uri",
        default="",
        help="model folder or MLflow models:/NAME@ALIAS whose profile is used and which scores "
        "both tables",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        default="",
        help="MLflow server for models:/ and runs:/ URIs (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--policy", default="", help="drift policy JSON (default thresholds)")
    parser.add_argument("--json", required=True, help="where to write every figure as JSON")
    parser.add_argument("--html", required=True, help="where to write the HTML report")


def _add_canary_outcome(commands) -> None:
    """`promote` and `rollback`: end a canary by hand, as the analysis step would."""
    for command, help_text in (
        ("promote", "give a canary all traffic and make it the MLflow champion"),
        ("rollback", "take a canary out of service and tag it rolled back in MLflow"),
    ):
        parser = commands.add_parser(
            command,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Uses $KUBECONFIG (or the "
            "pod's service account); a rerun changes nothing and says so.",
        )
        parser.add_argument("--name", required=True, help="InferenceService name")
        parser.add_argument(
            "--namespace", default="", help="namespace (default: the pod's, else default)"
        )
        parser.add_argument("--registered-model", required=True, help="MLflow registered model")
        parser.add_argument("--version", required=True, help="the canary's registered version")
        parser.add_argument(
            "--mlflow-tracking-uri",
            default=os.environ.get("MLFLOW_TRACKING_URI"),
            required="MLFLOW_TRACKING_URI" not in os.environ,
            help="MLflow tracking server (default: $MLFLOW_TRACKING_URI)",
        )
        parser.add_argument(
            "--timeout", type=float, default=600, help="seconds to wait for Ready (%(default)s)"
        )
        if command == "rollback":
            parser.add_argument(
                "--reason", default="rolled back by hand", help="recorded on the version"
            )
            parser.add_argument(
                "--previous-storage-uri",
                default="",
                help="Serverless: storageUri to serve again (default: the champion's recorded "
                "ctloop.storage_uri)",
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
    _add_serve(commands)
    _add_canary_outcome(commands)
    _add_drift(commands)
    demo = commands.add_parser("demo", help="the whole training loop locally, twice")
    demo.add_argument("--workdir", default=".ctloop")
    demo.add_argument("--build-dir", default="build")
    return parser


def _compile(args) -> int:
    from ctloop.pipelines.compiler import compile_all, compile_vertex
    from ctloop.pipelines.placement import GpuPlacement, Toleration, VertexPlacement

    if args.target == "vertex":
        if args.node_selector or args.toleration:
            raise ValueError(
                "--node-selector and --toleration place pods on Kubernetes nodes; "
                "Vertex AI picks the machine from --machine-type and --accelerator-type"
            )
        defaults = VertexPlacement()
        placement = VertexPlacement(
            machine_type=args.machine_type or defaults.machine_type,
            accelerator_type=args.accelerator_type or defaults.accelerator_type,
            accelerator_count=args.accelerator_count,
        )
        for path in compile_vertex(args.output_dir, image=args.image, placement=placement):
            print(path)
        return 0
    if args.machine_type:
        raise ValueError("--machine-type applies to --target vertex only")
    defaults = GpuPlacement()
    selectors = dict(pair.split("=", 1) for pair in args.node_selector or [])
    placement = GpuPlacement(
        accelerator_type=args.accelerator_type or defaults.accelerator_type,
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
    from ctloop.pipelines.parameters import ParameterError, check_json_arguments, parse_params

    if args.pipeline == "training":
        from ctloop.pipelines.training import build_training_pipeline

        pipeline = build_training_pipeline()
        required = {"data_uri": args.data}
    else:
        from ctloop.pipelines.monitoring import build_monitoring_pipeline

        pipeline = build_monitoring_pipeline()
        required = {"current_uri": args.current, "reference_uri": args.reference}
    flags = {"data_uri": "--data", "current_uri": "--current", "reference_uri": "--reference"}
    missing = [flags[name] for name, value in required.items() if not value]
    if missing:
        raise ParameterError(f"run {args.pipeline} needs {' and '.join(missing)}")
    arguments = parse_params(pipeline, args.param)
    check_json_arguments(arguments)
    if args.host:
        from ctloop.pipelines.kfp_api import kfp_client

        with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links
            run = kfp_client(args.host).create_run_from_pipeline_func(
                pipeline,
                arguments={**required, "target": args.target, **arguments},
                experiment_name=args.experiment,
            )
        summary = {"run_id": run.run_id, "host": args.host}
    else:
        from ctloop.pipelines.local_run import run_monitoring, run_training

        log_stream = sys.stderr if args.json else None  # keep stdout for the JSON line
        if args.pipeline == "training":
            summary = run_training(args.data, args.target, args.workdir, arguments, log_stream)
        else:
            summary = run_monitoring(
                args.current, args.reference, args.target, args.workdir, arguments, log_stream
            )
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


def _serve(args) -> int:
    from ctloop.serving.server import serve

    serve(
        args.model_uri,
        args.name,
        args.host,
        args.port,
        args.version,
        max_batch_rows=args.max_batch_rows,
        threads=args.threads,
        tracking_uri=args.mlflow_tracking_uri,
        request_logs=args.request_logs,
    )
    return 0


def _drift(args) -> int:
    from ctloop.components.drift.monitor import compare_datasets

    report = compare_datasets(
        args.reference,
        args.current,
        target=args.target,
        profile_path=args.profile,
        model_uri=args.model_uri,
        tracking_uri=args.mlflow_tracking_uri,
        policy=args.policy,
    )
    report.write(args.json, args.html)
    result = report.result
    summary = {
        "drift_detected": result.drift_detected,
        "drift_share": result.drift_share,
        "drifted_features": result.drifted_features,
        "json": args.json,
        "html": args.html,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


def _end_canary(args) -> int:
    from ctloop.components.canary import promotion
    from ctloop.components.deploy.cluster import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

    options = {
        "name": args.name,
        "namespace": resolve_namespace(args.namespace),
        "registered_model": args.registered_model,
        "version": args.version,
        "timeout_s": args.timeout,
    }
    if args.command == "promote":
        outcome = promotion.promote(kube_api(), args.mlflow_tracking_uri, **options)
    else:
        outcome = promotion.roll_back(
            kube_api(),
            args.mlflow_tracking_uri,
            reasons=[args.reason],
            previous_storage_uri=args.previous_storage_uri,
            **options,
        )
    if not outcome["changed"]:
        print(f"ctloop {args.command}: nothing to do, already done", file=sys.stderr)
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
        if args.command == "serve":
            return _serve(args)
        if args.command == "drift":
            return _drift(args)
        if args.command in ("promote", "rollback"):
            return _end_canary(args)
        from ctloop.pipelines.demo import run_demo

        return run_demo(args.workdir, args.build_dir)
    except ValueError as error:
        print(f"ctloop {args.command}: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"ctloop {args.command}: {error}", file=sys.stderr)
        return 1
