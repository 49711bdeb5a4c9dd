"""`ctloop audit` and `ctloop replay`: the decisions on record, read back and taken again.

`audit` prints a registered model's history from MLflow, oldest first: its versions (trained,
registered, the aliases they hold now, replaced or rolled back) and every decision about them
with its outcome, reasons and the code that decided. `replay` takes recorded decisions again
with the running code (`ctloop.pipelines.replay`), optionally under a new policy, and exits 1
when any outcome changed, so CI can test a policy or code change against every past decision.

Each command's parser sits beside its handler; handlers import their libraries inside the body,
so `ctloop --help` does not pay for MLflow.
"""

import json
import os
from pathlib import Path


def _audit(args) -> int:
    from ctloop.components.decisions.history import code_text, model_history
    from ctloop.components.decisions.store import require_existing_store, without_password

    if not args.registered_model.strip():
        raise ValueError("--registered-model is empty: name the registered model")
    uri = require_existing_store(args.mlflow_tracking_uri)
    history = model_history(uri, args.registered_model, args.version)
    if args.json_summary:
        print(json.dumps(history.to_json(), sort_keys=True))
        return 0
    decisions = sum(event.record is not None for event in history.events)
    print(
        f"{history.registered_model} at {without_password(args.mlflow_tracking_uri)}: "
        f"{_count(len(history.versions), 'version')}, {_count(decisions, 'decision')}"
    )
    for event in history.events:
        version = f"v{event.version}" if event.version else "-"
        print(f"{event.time or '?':25}  {version:>5}  {event.event:<17}  {event.detail}")
        for note in event.notes:
            print(f"{'':34}{note}")
        if event.record is not None:
            kfp_run = event.record.subject.get("kfp_run_id")
            where = f", in KFP run {kfp_run}" if kfp_run else ""
            print(f"{'':34}record {event.record.id}, by {code_text(event.record.code)}{where}")
            for reason in event.record.reasons:
                print(f"{'':34}- {reason}")
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _tracking_uri_option(parser, required: bool) -> None:
    parser.add_argument(
        "--mlflow-tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        required=required and "MLFLOW_TRACKING_URI" not in os.environ,
        help="MLflow tracking server (default: $MLFLOW_TRACKING_URI)",
    )


def _json_option(parser, what: str) -> None:
    parser.add_argument(
        "--json",
        dest="json_summary",
        action="store_true",
        help=f"print {what} (or the failure: error, exit_code) as one JSON object",
    )


def add_audit(commands) -> None:
    parser = commands.add_parser(
        "audit",
        help="print a registered model's history from MLflow: versions and every decision",
        description="Print, oldest first, a registered model's versions (trained, registered, "
        "the aliases they hold now, replaced, rolled back) and every decision recorded about "
        "them (gated, drift checked, retraining routed, shadowed, canary analysed, promoted, "
        "rolled back) with its outcome, reasons and the code version that decided.",
    )
    parser.set_defaults(handler=_audit)
    parser.add_argument("--registered-model", required=True, help="MLflow registered model")
    parser.add_argument("--version", help="only this version (its own decisions and its run's)")
    _tracking_uri_option(parser, required=True)
    _json_option(parser, "the history")


def _replay(args) -> int:
    from ctloop.pipelines import replay

    records = _records_to_replay(args)
    policy = _policy_text(args.policy)
    kinds = sorted({record.kind for record in records})
    if policy is not None and len(kinds) > 1:
        raise ValueError(
            f"--policy is one kind's policy, but the records are of kinds {', '.join(kinds)}: "
            "choose one with --kind"
        )
    replays = [replay.replay(record, policy) for record in records]
    code = replay.exit_code(replays)
    if args.json_summary:
        summary = {
            "replays": [result.to_json() for result in replays],
            "exit_code": code,
            **_tally(replays),
        }
        print(json.dumps(summary, sort_keys=True))
        return code
    for result in replays:
        _print_replay(result)
    tally = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in _tally(replays).items())
    print(f"{_count(len(replays), 'decision')}: {tally}")
    return code


def _tally(replays) -> dict[str, int]:
    """How many replays ended each way: {"same": n, "changed": n, "not_replayed": n}."""
    from ctloop.pipelines.replay import CHANGED, NOT_REPLAYED, SAME

    return {
        status.lower().replace(" ", "_"): sum(result.status == status for result in replays)
        for status in (SAME, CHANGED, NOT_REPLAYED)
    }


def _print_replay(result) -> None:
    from ctloop.components.decisions.history import outcome_text
    from ctloop.pipelines.replay import CHANGED, NOT_REPLAYED

    record = result.original
    print(
        f"{result.status:<12}  {record.kind} {_subject_text(record.subject)} (record {record.id})"
    )
    print(f"{'':14}recorded: {outcome_text(record.outcome)}")
    if result.status == NOT_REPLAYED:
        print(f"{'':14}{result.problem}")
        return
    print(f"{'':14}replayed: {outcome_text(result.replayed.outcome)}")
    if result.status == CHANGED:
        print(f"{'':14}differs: {', '.join(result.differing_keys)}")
        for reason in result.replayed.reasons:
            print(f"{'':14}- {reason}")


def _subject_text(subject: dict) -> str:
    parts = [
        subject.get("registered_model"),
        subject.get("model_version") and f"v{subject['model_version']}",
        subject.get("run_id") and f"run {subject['run_id']}",
        subject.get("kfp_run_id") and f"KFP run {subject['kfp_run_id']}",
    ]
    return " ".join(part for part in parts if part) or "(no subject)"


def _records_to_replay(args) -> list:
    """The records named on the command line (files or ids), then with `--all` every record
    of the model; `--kind` keeps one kind."""
    from ctloop.components.decisions.record import KINDS, read_record
    from ctloop.components.decisions.store import (
        load_record,
        records_for,
        require_existing_store,
        without_password,
    )

    if args.kind is not None and args.kind not in KINDS:
        raise ValueError(f"--kind {args.kind!r} is not one of {', '.join(KINDS)}")
    if args.all != bool(args.registered_model):
        raise ValueError("--all and --registered-model go together: every decision about a model")
    if not args.records and not args.all:
        raise ValueError("name a RECORD (file or record id) or use --all --registered-model NAME")
    uri = args.mlflow_tracking_uri
    records = []
    for given in args.records:
        if _names_a_file(given):
            records.append(read_record(given))
        elif uri:
            records.append(load_record(require_existing_store(uri), given))
        else:
            raise ValueError(
                f"RECORD {given!r}: no such file, and no --mlflow-tracking-uri (or "
                "$MLFLOW_TRACKING_URI) to look it up as a record id"
            )
    if args.all:
        if not uri:
            raise ValueError("--all needs --mlflow-tracking-uri (or $MLFLOW_TRACKING_URI)")
        found = records_for(require_existing_store(uri), args.registered_model)
        if not found:
            raise ValueError(
                f"no decision records about {args.registered_model!r} at {without_password(uri)}"
            )
        records += found
    if args.kind:
        records = [record for record in records if record.kind == args.kind]
        if not records:
            raise ValueError(f"none of the records is a {args.kind!r} decision")
    return records


def _names_a_file(given: str) -> bool:
    """A path rather than an id: it exists, or it looks like one (a folder or .json)."""
    return Path(given).exists() or given.endswith(".json") or os.sep in given


MAX_POLICY_BYTES = 2**20
"""The largest `--policy @FILE` read: a policy is a few lines; a path to a data file or
`/dev/zero` given by mistake is refused at once instead of filling the memory."""


def _policy_text(option: str | None) -> str | None:
    """`--policy`: the text itself, or `@FILE` for a file's text; None when not given.

    Every kind's policy is JSON, so text that is not is refused here, once, rather than as
    the same NOT REPLAYED under every record."""
    if option is None:
        return None
    text, where = option, "--policy"
    if option.startswith("@"):
        where = f"--policy {option}"
        try:
            with open(option[1:], "rb") as handle:
                data = handle.read(MAX_POLICY_BYTES + 1)
        except OSError as error:
            raise ValueError(f"{where}: cannot read the policy file: {error}") from None
        if len(data) > MAX_POLICY_BYTES:
            raise ValueError(f"{where}: larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{where}: not UTF-8 text: {error}") from None
    if text.strip():
        try:
            json.loads(text)
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{where} is not JSON: {error}") from None
    return text


def add_replay(commands) -> None:
    parser = commands.add_parser(
        "replay",
        help="take recorded decisions again with this code; exit 1 when any outcome changed",
        description="Take each decision again from its record's pinned inputs with the running "
        "code (and --policy instead of the recorded policy, if given), print the recorded and "
        "replayed outcomes and SAME or CHANGED (with the keys that differ and the new reasons). "
        "Exit 0 when every outcome is the same, 1 when any changed, 2 when a record cannot be "
        "read or replayed.",
    )
    parser.set_defaults(handler=_replay)
    parser.add_argument(
        "records",
        nargs="*",
        metavar="RECORD",
        help="a decision record file (JSON), or the id of a record (or of its run) in MLflow",
    )
    parser.add_argument(
        "--policy",
        metavar="TEXT|@FILE",
        help="policy to decide with instead of the recorded one: JSON text, or @FILE "
        "('' decides with this code's default policy)",
    )
    parser.add_argument(
        "--all", action="store_true", help="also every decision recorded about --registered-model"
    )
    parser.add_argument("--registered-model", default="", help="with --all: the model")
    parser.add_argument(
        "--kind", help="replay only decisions of this kind (gate, drift, canary, promotion...)"
    )
    _tracking_uri_option(parser, required=False)
    _json_option(parser, "every comparison")


def add_commands(commands) -> None:
    """`audit`, then `replay`."""
    add_audit(commands)
    add_replay(commands)
