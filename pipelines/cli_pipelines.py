"""`ctloop compile`, `run`, `upload`, `schedule` and `demo`: the commands that build pipelines
and hand them to a runner (kfp.local, a KFP endpoint, a schedule).

Each command's parser sits beside its handler and names it with `set_defaults(handler=…)`, so a
flag and the code that reads it are read together. Handlers import their libraries inside the body:
`ctloop --help` must not pay for kfp, MLflow or XGBoost.
"""

import contextlib
import json
import sys
from pathlib import Path

from ctloop.components.image import DEFAULT_IMAGE


def _compile(args) -> int:
    from ctloop.components.kube_labels import check_object_name
    from ctloop.pipelines.compiler import compile_all, compile_vertex
    from ctloop.pipelines.placement import key_values, placement_for

    options = {name: getattr(args, name) for name in PLACEMENT_FLAGS}
    placement = placement_for(args.target, **options)
    if args.target == "vertex":
        if args.webhook_secret:
            raise ValueError("--webhook-secret names a Kubernetes Secret: not with --target vertex")
        written = compile_vertex(
            args.output_dir, image=args.image, placement=placement, feast_image=args.feast_image
        )
    else:
        if args.webhook_secret:
            check_object_name(args.webhook_secret, "--webhook-secret", ValueError)
        labels = key_values("--label", args.label or [])
        written = compile_all(
            args.output_dir,
            args.image,
            placement,
            pod_labels=labels,
            webhook_secret=args.webhook_secret,
            feast_image=args.feast_image,
        )
    for path in written:
        print(path)
    return 0


PLACEMENT_FLAGS = ("accelerator_type", "accelerator_count", "machine_type", "node_selector")
PLACEMENT_FLAGS += ("toleration", "spot", "retries", "retry_backoff", "label")


def add_compile(commands) -> None:
    parser = commands.add_parser(
        "compile",
        help="compile every pipeline and component to YAML",
        description="Write build/pipelines/{training,monitoring}.yaml and "
        "build/components/<name>.yaml for Kubeflow Pipelines; with --target vertex, "
        "build/vertex/training.yaml for Vertex AI Pipelines (the train step a CustomJob).",
    )
    parser.set_defaults(handler=_compile)
    parser.add_argument("--output-dir", default="build")
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help="image of every component (pinned tag or digest)"
    )
    parser.add_argument(
        "--feast-image",
        default="",
        help="image of the steps that read Feast when given a feature_repo (load, materialize "
        "features): one with Feast, e.g. what make images builds as ctloop-feast (pinned tag "
        "or digest); default: --image",
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
    parser.add_argument(
        "--spot",
        nargs="?",
        const="",
        metavar="CLOUD",
        help="train on spot (preemptible) capacity: kfp needs the cloud, gke "
        "(cloud.google.com/gke-spot) or eks (eks.amazonaws.com/capacityType: SPOT); "
        "vertex takes none (Spot VMs). Pair with the train step's checkpoint_uri",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="times KFP retries a failed train step (default 3; 0: never)",
    )
    parser.add_argument(
        "--retry-backoff",
        default="60s",
        metavar="DURATION",
        help="wait before the first retry, doubling after each (default 60s, at most 1h in all)",
    )
    parser.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="label on every pipeline pod, e.g. team=fraud, project=churn, cost-center=cc-42 "
        "(repeatable), for grouping cluster spend",
    )
    parser.add_argument(
        "--webhook-secret",
        default="",
        metavar="SECRET",
        help="Kubernetes Secret whose key `url` holds the webhook (Slack or compatible) told "
        "when each run ends; a run's webhook_url parameter overrides it (default: none)",
    )


def _run(args) -> int:
    from ctloop.pipelines.parameters import ParameterError, check_json_arguments, parse_params

    if args.pipeline == "training":
        from ctloop.pipelines.training import build_training_pipeline

        pipeline = build_training_pipeline()
    else:
        from ctloop.pipelines.monitoring import build_monitoring_pipeline

        pipeline = build_monitoring_pipeline()
    arguments = parse_params(pipeline, args.param)
    check_json_arguments(arguments)
    if args.wait is not None and not args.host:
        raise ParameterError("--wait waits for a run on a KFP endpoint: give --host")
    taken = {}
    if args.pipeline == "training":
        missing = [flag for flag in ("data", "target") if not getattr(args, flag)]
        if missing:
            raise ParameterError(f"run training needs {' and '.join(f'--{m}' for m in missing)}")
        inputs = {"data_uri": args.data, "target": args.target}
    else:
        if not args.current:
            raise ParameterError("run monitoring needs --current")
        inputs = {"current_uri": args.current, "reference_uri": args.reference}
        inputs["target"] = args.target
        taken = _take_missing_from_champion(args, pipeline, arguments, inputs)
    if not args.host:
        from ctloop.pipelines.run_inputs import check_local_inputs

        check_local_inputs(inputs)  # before kfp.local spends its start-up on a missing file
    if args.host:
        from ctloop.pipelines.kfp_api import kfp_client, wait_for_run

        with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links
            client = kfp_client(args.host)
            run = client.create_run_from_pipeline_func(
                pipeline,
                arguments={**inputs, **arguments},
                experiment_name=args.experiment,
            )
        summary = {"run_id": run.run_id, "host": args.host}
        if args.wait is not None:
            print(f"ctloop run: waiting for KFP run {run.run_id}", file=sys.stderr)
            summary["state"] = wait_for_run(client, run.run_id, args.wait)
    else:
        from ctloop.pipelines.local_run import run_monitoring_pipeline, run_training_pipeline

        log_stream = sys.stderr if args.json_summary else None  # keep stdout for the JSON line
        if args.pipeline == "training":
            summary = run_training_pipeline(
                args.data, args.target, args.workdir, arguments, log_stream
            )
        else:
            summary = run_monitoring_pipeline(
                inputs["current_uri"],
                inputs["reference_uri"],
                inputs["target"],
                args.workdir,
                arguments,
                log_stream,
            )
    if taken:
        summary["taken_from_champion"] = taken
    if args.json_summary:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _take_missing_from_champion(args, pipeline, arguments: dict, inputs: dict) -> dict:
    """Fill the monitoring run's missing reference URI and target from the champion; say so
    on stderr and return what was taken ({} when both were given)."""
    missing = [name for name in ("reference_uri", "target") if not inputs[name]]
    if not missing:
        return {}
    from ctloop.pipelines.run_inputs import champion_training_inputs

    def argument(name: str):
        return arguments.get(name, pipeline.component_spec.inputs[name].default)

    if arguments.get("mlflow_tracking_uri") or args.host:
        tracking_uri = argument("mlflow_tracking_uri")
    else:
        from ctloop.pipelines.local_run import Workdir

        tracking_uri = Workdir(Path(args.workdir).resolve()).tracking_uri
    champion = champion_training_inputs(
        tracking_uri, argument("registered_model_name"), argument("champion_alias")
    )
    taken = {name: champion[name] for name in missing}
    inputs.update(taken)
    flags = {"reference_uri": "--reference", "target": "--target"}
    said = ", ".join(f"{flags[name]} {value!r}" for name, value in taken.items())
    print(
        f"ctloop run: taken from the champion {champion['model']} (version "
        f"{champion['version']}): {said}",
        file=sys.stderr,
    )
    return {**taken, "model": champion["model"], "version": champion["version"]}


def add_run(commands) -> None:
    parser = commands.add_parser(
        "run", help="run a pipeline locally (default) or on a KFP endpoint (--host)"
    )
    parser.set_defaults(handler=_run)
    parser.add_argument("pipeline", choices=["training", "monitoring"])
    parser.add_argument("--data", help="training: the training table URI (Parquet or CSV)")
    parser.add_argument(
        "--current", help="monitoring: the production window URI (may hold {date} fields)"
    )
    parser.add_argument(
        "--reference",
        help="monitoring: the champion's training data, extended with the window on retraining "
        "(default: the champion's, as its reference profile records it)",
    )
    parser.add_argument("--target", help="label column (monitoring default: the champion's)")
    parser.add_argument("--workdir", default=".ctloop", help="local run folder (MLflow, outputs)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter (repeatable), typed by the pipeline",
    )
    parser.add_argument(
        "--json",
        dest="json_summary",
        action="store_true",
        help="print the summary (or the failure: error, exit_code) as one JSON object on the "
        "last line",
    )
    parser.add_argument("--host", help="KFP endpoint: submit the run there instead")
    parser.add_argument("--experiment", default="ctloop", help="KFP experiment (with --host)")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="with --host: wait for the run to end, at most SECONDS; exit 1 unless it succeeded",
    )


def _upload(args) -> int:
    from ctloop.pipelines.kfp_api import default_version_name, publish_compiled

    with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links: keep stdout JSON
        outcomes = publish_compiled(
            args.host, args.build_dir, args.version or default_version_name()
        )
    for outcome in outcomes:
        print(json.dumps(outcome, sort_keys=True))
    return 0


def add_upload(commands) -> None:
    parser = commands.add_parser(
        "upload",
        help="publish every compiled pipeline to a KFP endpoint (create, or add a version)",
    )
    parser.set_defaults(handler=_upload)
    parser.add_argument("--host", required=True, help="KFP endpoint")
    parser.add_argument("--version", help="version name (default: v<package>-<git commit>)")
    parser.add_argument("--build-dir", default="build", help="where `ctloop compile` wrote")


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


def add_schedule(commands) -> None:
    parser = commands.add_parser(
        "schedule",
        help="create or update the recurring monitoring run on a KFP endpoint",
        description="Create the recurring run of the newest uploaded version of PIPELINE, or "
        "replace it when the cron, version or parameters changed (a rerun with the same "
        "arguments changes nothing). Enabled, one run at a time, no catch-up.",
    )
    parser.set_defaults(handler=_schedule)
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


def _demo(args) -> int:
    from ctloop.pipelines.demo import run_demo

    return run_demo(args.workdir, args.build_dir)


def add_demo(commands) -> None:
    parser = commands.add_parser("demo", help="the whole training loop locally, twice")
    parser.set_defaults(handler=_demo)
    parser.add_argument("--workdir", default=".ctloop")
    parser.add_argument("--build-dir", default="build")
