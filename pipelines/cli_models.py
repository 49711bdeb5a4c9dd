"""`ctloop serve`, `drift`, `promote` and `rollback`: the commands that work on one trained model
outside any pipeline (serve it, compare tables against its profile, end its canary by hand).

Each command's parser sits beside its handler and names it with `set_defaults(handler=…)`, so a
flag and the code that reads it are read together. Handlers import their libraries inside the body:
`ctloop --help` must not pay for KServe, MLflow or the Kubernetes client.
"""

import json
import os
import sys


def _serve(args) -> int:
    from ctloop.serving.server_options import server_options

    options = server_options(args)  # flags are checked before KServe and XGBoost are imported
    from ctloop.serving.server import serve

    serve(args.model_uri, tracking_uri=args.mlflow_tracking_uri, **options)
    return 0


def add_serve(commands) -> None:
    from ctloop.serving.server_options import add_server_options

    parser = commands.add_parser(
        "serve",
        help="serve a model with ctloop's KServe predictor (loopback by default)",
        description="Serve a model folder or MLflow model over KServe's v1 and v2 REST APIs "
        "(/v1/models/NAME:predict, /v2/models/NAME/infer, /metrics) until interrupted.",
    )
    parser.set_defaults(handler=_serve)
    parser.add_argument(
        "--model-uri",
        required=True,
        help="model folder (model.json + reference_profile.json, or an MLflow model), "
        "file:// URI, or MLflow models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        help="MLflow server for models:/ and runs:/ URIs of --model-uri and --shadow-model-uri "
        "(default: $MLFLOW_TRACKING_URI)",
    )
    add_server_options(parser, default_name="ctloop-model")


def _drift(args) -> int:
    from ctloop.components.contract.model_uri import load_model_uri
    from ctloop.components.contract.profile import load_profile
    from ctloop.components.drift.comparison import TableComparisonError, compare_tables
    from ctloop.components.table_io import DatasetError, read_table

    tables = {}
    for option in ("reference", "current"):
        try:
            tables[option] = read_table(getattr(args, option))
        except DatasetError as error:
            raise DatasetError(f"--{option}: {error}") from error
    model = load_model_uri(args.model_uri, args.mlflow_tracking_uri) if args.model_uri else None
    try:
        report = compare_tables(
            tables["reference"],
            tables["current"],
            target=args.target,
            profile=load_profile(args.profile) if args.profile else None,
            model=model,
            policy=args.policy,
        )
    except TableComparisonError as error:
        uri = getattr(args, error.table)
        raise TableComparisonError(error.table, f"--{error.table} {uri!r}: {error}") from error
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


def add_drift(commands) -> None:
    parser = commands.add_parser(
        "drift",
        help="compare a current table with a reference table for drift (exit 0 either way)",
        description="Measure every feature of --current against the reference profile (built "
        "from --reference, read from --profile, or the model's with --model-uri, which also "
        "scores both tables for prediction drift) and write the figures and a report.",
    )
    parser.set_defaults(handler=_drift)
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


def _canary_options(args) -> dict:
    """What `promote` and `rollback` both pass to the promotion module."""
    from ctloop.components.deploy.rollout import resolve_namespace

    return {
        "name": args.name,
        "namespace": resolve_namespace(args.namespace),
        "registered_model": args.registered_model,
        "version": args.version,
        "timeout_s": args.timeout,
    }


def _record_and_print(args, outcome: dict, trigger: dict, reasons: list[str]) -> int:
    """Print what was done (naming its decision record), then keep the record: in MLflow and,
    with --record, in that file. The outcome is printed first, so a record that cannot be
    logged (exit 1, saying the action WAS applied) leaves the operator knowing what changed."""
    from ctloop.components.canary.promotion_record import action_record, applied_text
    from ctloop.components.canary.record_keeping import keep_records

    record = action_record(
        outcome, trigger, reasons=reasons, registered_model=args.registered_model
    )
    if not outcome["changed"]:
        print(f"ctloop {args.command}: nothing to do, already done", file=sys.stderr)
    print(json.dumps({**outcome, "decision_record": record.id}, sort_keys=True))
    sys.stdout.flush()
    keep_records([(record, args.record)], args.mlflow_tracking_uri, applied=applied_text(outcome))
    return 0


def _manual_trigger(args, options: dict, **more) -> dict:
    """The record's trigger, taken before anything changes: the command, its flags (without the
    tracking URI, which may hold credentials) and who ran it."""
    from ctloop.components.canary.promotion_record import manual_trigger

    return manual_trigger(args.command, {**options, **more})


def _promote(args) -> int:
    from ctloop.components.canary import promotion
    from ctloop.components.deploy.api_client import kube_api

    options = _canary_options(args)
    trigger = _manual_trigger(args, options)
    outcome = promotion.promote(kube_api(), args.mlflow_tracking_uri, **options)
    return _record_and_print(args, outcome, trigger, [])


def _roll_back(args) -> int:
    from ctloop.components.canary import promotion
    from ctloop.components.deploy.api_client import kube_api

    options = _canary_options(args)
    previous = args.previous_storage_uri
    trigger = _manual_trigger(args, options, reason=args.reason, previous_storage_uri=previous)
    outcome = promotion.roll_back(
        kube_api(),
        args.mlflow_tracking_uri,
        reasons=[args.reason],
        previous_storage_uri=previous,
        **options,
    )
    return _record_and_print(args, outcome, trigger, [args.reason])


def _add_canary_command(commands, command: str, help_text: str):
    """`promote` and `rollback` end a canary by hand, as the analysis step would: same flags."""
    parser = commands.add_parser(
        command,
        help=help_text,
        description=f"{help_text[0].upper()}{help_text[1:]}. Uses $KUBECONFIG (or the "
        "pod's service account); a rerun changes nothing and says so. The action is a "
        "decision record in MLflow (trigger: manual, with these flags and the user).",
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
    parser.add_argument(
        "--record", default="", help="also write the decision record (JSON) to this file"
    )
    return parser


def add_promote(commands) -> None:
    parser = _add_canary_command(
        commands, "promote", "give a canary all traffic and make it the MLflow champion"
    )
    parser.set_defaults(handler=_promote)


def add_rollback(commands) -> None:
    parser = _add_canary_command(
        commands, "rollback", "take a canary out of service and tag it rolled back in MLflow"
    )
    parser.set_defaults(handler=_roll_back)
    parser.add_argument("--reason", default="rolled back by hand", help="recorded on the version")
    parser.add_argument(
        "--previous-storage-uri",
        default="",
        help="Serverless: storageUri to serve again (default: the champion's recorded "
        "ctloop.storage_uri)",
    )
