"""`ctloop shadow-analysis` and `ctloop ab-analysis`: the rollout's decisions, run by hand or
from a script.

Like `ctloop drift` and `ctloop run`, a command exits 0 whenever it could decide, whatever it
decided, and prints the decision as one JSON line on stdout for a script to read: a rejected
shadow, or an experiment that must go on, is an answer, not a failure. Bad input exits 2 and a
source that cannot be read exits 1 (`ctloop.pipelines.cli`). Each command's parser sits beside
its handler; handlers import their libraries inside the body.

With `--record` the decision record is written to a file, and with `--mlflow-tracking-uri` it is
logged to MLflow, as the pipeline's step does: the record to give `ctloop replay`, or to name
as the trigger of a promotion.
"""

import json
import sys
import time


def _report_and_print(args, summary: dict, markdown: str, record) -> int:
    """Write the Markdown report to `--report` (whole, or not at all), print the decision as the
    JSON line, naming the report and the record, then keep the record (`--record`, MLflow)."""
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.table_io import partial_then_rename

    if args.report:
        with partial_then_rename(args.report) as partial:
            partial.write_text(markdown)
        summary = {**summary, "report": args.report}
    print(json.dumps({**summary, "decision_record": record.id}, sort_keys=True))
    sys.stdout.flush()
    keep_records([(record, args.record)], args.mlflow_tracking_uri)
    return 0


def _add_record_options(parser) -> None:
    parser.add_argument("--record", default="", help="write the decision record (JSON) here")
    parser.add_argument(
        "--mlflow-tracking-uri",
        default="",
        help="MLflow tracking server to log the decision record to (default: not logged)",
    )
    parser.add_argument(
        "--registered-model", default="", help="registered model the decision is about"
    )


def _shadow_analysis(args) -> int:
    from ctloop.components.shadow.decision import run_shadow_analysis, shadow_record
    from ctloop.components.shadow.measurement import ShadowTarget
    from ctloop.components.shadow.policy import parse_shadow_policy
    from ctloop.components.shadow.report import decision_markdown

    policy = parse_shadow_policy(args.policy)
    if args.prometheus_url and not args.shadow_version:
        raise ValueError("--prometheus-url needs --shadow-version: whose figures to read")
    if args.window_s < 0:
        raise ValueError(f"--window-s {args.window_s:g} must be >= 0")
    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout:g} must be > 0")
    model_name = args.model_name
    if model_name is None:
        model_name = "ctloop-model" if args.prometheus_url else ""
    target = ShadowTarget(model_name, args.shadow_version, args.served_version, args.namespace)
    decision = run_shadow_analysis(
        policy,
        target,
        prometheus_url=args.prometheus_url,
        metrics_url=args.metrics_url,
        started_at=time.time() - args.window_s,
        timeout_s=args.timeout,
    )
    record = shadow_record(
        decision, policy_text=args.policy, registered_model=args.registered_model
    )
    return _report_and_print(args, decision.to_json(), decision_markdown(decision), record)


def add_shadow_analysis(commands) -> None:
    parser = commands.add_parser(
        "shadow-analysis",
        help="decide from a shadow's paired figures whether to go on to a canary (exit 0 "
        "either way)",
        description="Read the figures a predictor counts for its shadow model (rows compared, "
        "disagreements, score differences, errors, skipped rows) every step_s for bake_time_s "
        "(from --policy), apply the policy's checks and print the decision as one JSON line "
        "(go_on, verdict, action, reasons, figures, checks).",
    )
    parser.set_defaults(handler=_shadow_analysis)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prometheus-url",
        default="",
        help="Prometheus that scrapes the predictors; figures are increases over the "
        "analysis window, summed over replicas",
    )
    source.add_argument(
        "--metrics-url",
        default="",
        help="one predictor's metrics page, e.g. http://127.0.0.1:8080/metrics; figures are "
        "its totals since it started",
    )
    parser.add_argument(
        "--shadow-version", default="", help="the shadow's version (needed with Prometheus)"
    )
    parser.add_argument(
        "--model-name",
        help="model_name label of the metrics (default: ctloop-model with Prometheus, any "
        "with --metrics-url)",
    )
    parser.add_argument("--served-version", default="", help="the served version (default: any)")
    parser.add_argument("--namespace", default="", help="namespace label (default: any)")
    parser.add_argument(
        "--policy",
        default="",
        help="shadow policy JSON (default thresholds), e.g. '{\"bake_time_s\": 0}' to decide "
        "on the figures as they are now",
    )
    parser.add_argument(
        "--window-s",
        type=float,
        default=0.0,
        help="seconds the shadow has been scoring already: the window starts then (default 0)",
    )
    parser.add_argument("--report", default="", help="where to write the decision as Markdown")
    _add_record_options(parser)
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds each request may take (%(default)s)"
    )


def _ab_analysis(args) -> int:
    from ctloop.components.experiment.decision import ab_record, run_ab_analysis
    from ctloop.components.experiment.report import decision_markdown, decision_summary

    decision = run_ab_analysis(args.prediction_log, args.labels, args.control_variant, args.policy)
    record = ab_record(
        decision,
        policy_text=args.policy,
        prediction_log_uri=args.prediction_log,
        labels_uri=args.labels,
        registered_model=args.registered_model,
    )
    return _report_and_print(args, decision_summary(decision), decision_markdown(decision), record)


def add_ab_analysis(commands) -> None:
    parser = commands.add_parser(
        "ab-analysis",
        help="judge an A/B experiment on its outcome labels: promote, rollback or continue "
        "(exit 0 either way)",
        description="Join the prediction log with the outcome labels, compare each challenger "
        "variant with the control on the policy's metric by an always-valid sequential test "
        "(safe to run every day), and print the decision as one JSON line (action, winner, "
        "reasons, and per variant its rows, metric, difference and interval).",
    )
    parser.set_defaults(handler=_ab_analysis)
    parser.add_argument(
        "--prediction-log",
        required=True,
        help="the prediction log: the folder the predictors write (local, s3://, gs://...)",
    )
    parser.add_argument(
        "--labels",
        required=True,
        help="labels table (Parquet or CSV): request_id, optional row, the outcome column",
    )
    parser.add_argument(
        "--control-variant",
        required=True,
        help="the control's variant (the champion's version); every other one is a challenger",
    )
    parser.add_argument(
        "--policy",
        default="",
        help='experiment policy JSON (default: log loss of column "label", alpha 0.05), e.g. '
        '\'{"metric": "outcome_mean", "outcome_column": "revenue", "better": "higher"}\'',
    )
    parser.add_argument("--report", default="", help="where to write the decision as Markdown")
    _add_record_options(parser)
