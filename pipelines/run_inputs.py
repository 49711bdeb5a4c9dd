"""The input tables of `ctloop run`: checked before a local run starts, and a monitoring run's
missing ones taken from the champion.

A local run spends its first seconds (kfp.local's start-up, then the load step's) before it
reads its input, so a local table is read here first with the load step's own reader
(`table_io.read_table`), and a missing or unreadable one fails at once, naming its flag.

A monitoring run told no reference or target takes the champion's. Training records both in
the reference profile logged with the model (`dataset.uri`, the table the champion learnt
from, and `target`), so `ctloop run monitoring --current URI` needs nothing else: the window
is compared with the champion's profile either way, and retraining extends the champion's
own training data with it.
"""

from pathlib import Path

from ctloop.pipelines.parameters import ParameterError


class NoChampionError(ParameterError):
    """No champion to take a monitoring run's missing inputs from."""


class ChampionUnreadableError(RuntimeError):
    """The MLflow store holding the champion could not be read (unreachable, refused)."""


RECORDED = {"reference_uri": "training data (dataset.uri)", "target": "target"}
"""What the champion's reference profile must record, and how a message names it."""


def champion_training_inputs(tracking_uri: str, registered_model: str, alias: str) -> dict:
    """`{"reference_uri", "target", "model", "version"}` of the version holding `alias`.

    Raises:
        NoChampionError: the store, the model or the alias is absent, or the champion's
            profile does not record its training data or target.
        ChampionUnreadableError: MLflow could not be read.
    """
    where = f"{registered_model}@{alias}"
    advice = "give --reference and --target, or train a champion first"
    if tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri.removeprefix("sqlite:///"))
        if not store.exists():  # opening it would create an empty store
            raise NoChampionError(f"no champion {where}: no MLflow store at {store}; {advice}")
    from mlflow.exceptions import MlflowException

    from ctloop.components.registry.mlflow_registry import model_by_alias

    try:
        champion = model_by_alias(tracking_uri, registered_model, alias)
    except MlflowException as error:
        raise ChampionUnreadableError(
            f"cannot read the champion {where} from {tracking_uri}: {error.message}"
        ) from error
    if champion is None:
        raise NoChampionError(f"no champion {where} in {tracking_uri}; {advice}")
    profile = champion.profile
    recorded = {
        "reference_uri": str((profile.get("dataset") or {}).get("uri") or ""),
        "target": str(profile.get("target") or ""),
    }
    absent = [name for name, value in recorded.items() if not value]
    if absent:
        raise NoChampionError(
            f"champion {where} (version {champion.version}) does not record its "
            f"{' or '.join(RECORDED[name] for name in absent)}; give --reference and --target"
        )
    return {**recorded, "model": where, "version": champion.version}


def check_local_inputs(inputs: dict) -> None:
    """Read each local input table (`data_uri`, `current_uri`, `reference_uri`); remote URIs
    and {date} templates are left to the load step, which alone can resolve them."""
    from ctloop.components.table_io import DatasetError, read_table

    flags = {"data_uri": "--data", "current_uri": "--current", "reference_uri": "--reference"}
    for name, flag in flags.items():
        uri = inputs.get(name, "")
        if not uri or "{" in uri or ("://" in uri and not uri.startswith("file://")):
            continue
        try:
            read_table(uri)
        except DatasetError as error:
            raise DatasetError(f"{flag}: {error}") from error
