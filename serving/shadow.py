"""`ShadowScorer`: a second model scores the served model's rows off the request path.

A challenger is compared with the champion on the requests the champion answers: every scored
batch (the float32 matrix the served model scored, and its scores) is offered to the shadow,
which scores the same rows on a background thread and updates the paired metrics of
`ctloop.serving.metrics` (rows compared, disagreements at the 0.5 threshold, the per-row score
difference, its errors and latency). Nobody sees the shadow's scores.

Nothing the shadow does reaches a caller: `submit` only appends to a `GatheringQueue` bounded
in rows and never waits (a batch that does not fit is skipped and counted), never raises, and
a shadow that fails, or is slow, only shows in its own metrics. Batches gather for up to 50 ms
and are scored together, so a busy server pays the shadow's fixed cost (a wake-up, Python
bookkeeping under the GIL, one scoring call) once for many small requests, and the shadow's
booster uses one thread, leaving the other CPUs to the served model.

The shadow's rows are the served model's rows translated once per batch with a plan made at
load: columns are matched by feature name (by position when neither booster names its
features), a categorical feature's codes are re-coded into the shadow's category list by
category (one it does not know is missing, as for any unseen category). A shadow that needs a
feature the served model does not take, or takes one as numeric that the other takes as
categorical, cannot score these rows: it says so in one log line at load, and its rows are
counted as errors. Runtime failures are logged once per distinct message, not per request.

A shadow that cannot be loaded at start-up is a start-up error: the operator asked for the
comparison, and a server that silently runs without it would report no figures at all.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ctloop.components.contract.model_folder import (
    UNKNOWN_VERSION,
    LoadedModel,
    ModelLoadingError,
    describe,
    load_model,
)
from ctloop.components.contract.model_uri import (
    MLFLOW_SCHEMES,
    ModelSourceUnavailableError,
    local_model_dir,
)
from ctloop.serving import metrics
from ctloop.serving.gathering_queue import GatheringQueue

LABEL_THRESHOLD = 0.5
logger = logging.getLogger(__name__)


class ShadowScorer:
    """Scores the served model's batches with `shadow` on a background thread."""

    def __init__(
        self,
        shadow: LoadedModel,
        served: LoadedModel,
        *,
        model_name: str,
        model_version: str,
        shadow_version: str,
        queue_rows: int,
    ) -> None:
        """
        Args:
            shadow: The shadow model; its booster is used from the background thread only.
            served: The served model, whose input matrix `submit` receives.
            model_name, model_version, shadow_version: The metrics' labels.
            queue_rows: Most rows waiting to be scored; a batch that would exceed it is skipped.
        """
        self.labels = (model_name, model_version, shadow_version)
        self._booster = shadow.booster
        self._booster.set_param({"nthread": 1})
        self._iteration_range = shadow.iteration_range
        self._plan, problems = _column_plan(served, shadow)
        self._unusable = "; ".join(problems)
        if problems:
            logger.warning(
                "shadow model %s cannot score the served model's rows: %s; every row offered "
                "to it is counted in ctloop_shadow_errors_total",
                shadow_version or "(no version)",
                self._unusable,
            )
        self._logged: set[str] = set()
        self._errors = metrics.SHADOW_ERRORS.labels(*self.labels)
        self._latency = metrics.SHADOW_LATENCY.labels(*self.labels)
        self.queue = GatheringQueue(
            "ctloop-shadow",
            queue_rows,
            self._compare,
            metrics.SHADOW_ROWS_SKIPPED.labels(*self.labels).inc,
        )

    def submit(self, matrix: np.ndarray, served_scores: np.ndarray) -> None:
        """Offer a scored batch; skipped (and counted) when the queue has no room for it.
        Never waits, never raises: the caller is answering a request."""
        self.queue.put(len(served_scores), (matrix, served_scores))

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """The shadow's scores of rows in its own feature order (background thread)."""
        return self._booster.inplace_predict(matrix, iteration_range=self._iteration_range)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every accepted batch is scored or failed; False if `timeout_s` passed."""
        return self.queue.wait_idle(timeout_s)

    def close(self) -> None:
        """Stop accepting batches and stop the thread."""
        self.queue.close()

    def _compare(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Score a round's batches with the shadow and record the paired figures."""
        rows = sum(len(scores) for _, scores in batches)
        try:
            if self._unusable:
                raise ShadowInputError(self._unusable)
            served = np.concatenate([scores for _, scores in batches])
            matrix = _translate(np.concatenate([matrix for matrix, _ in batches]), self._plan)
            started = time.perf_counter()
            shadow = np.asarray(self.scores(matrix), dtype=np.float32)
            self._latency.observe(time.perf_counter() - started)
            if shadow.shape != served.shape:
                raise ShadowInputError(
                    f"the shadow returns scores of shape {shadow.shape[1:]} a row, the served "
                    f"model {served.shape[1:]}"
                )
        except Exception as error:  # noqa: BLE001 - counted; the served answers are unaffected
            self._errors.inc(rows)
            message = f"{type(error).__name__}: {error}"
            if message not in self._logged and not self._unusable:  # that one is logged at load
                self._logged.add(message)
                logger.warning("shadow model failed to score %d rows (counted): %s", rows, message)
            return
        record_comparison(self.labels, served, shadow)


def load_shadow(
    shadow_dir: str | Path,
    shadow_version: str | None,
    served: LoadedModel,
    *,
    model_name: str,
    model_version: str,
    queue_rows: int,
) -> ShadowScorer:
    """Load the shadow model from a local folder and start its scorer.

    Raises:
        ModelLoadingError: the shadow cannot be loaded (stops the server's start-up: the
            operator asked for the comparison).
    """
    try:
        shadow = load_model(shadow_dir, shadow_version)
    except ModelLoadingError as error:
        raise ModelLoadingError(f"shadow model: {error}") from error
    version = None if shadow.version == UNKNOWN_VERSION else shadow.version
    logger.info("shadow model of %r loaded: %s", model_name, describe(shadow))
    if version is None:
        logger.warning("the shadow model has no version: give one (--shadow-version)")
    return ShadowScorer(
        shadow,
        served,
        model_name=model_name,
        model_version=model_version,
        shadow_version=version or metrics.NO_VERSION,
        queue_rows=queue_rows,
    )


class ShadowInputError(ValueError):
    """The shadow cannot score the served model's rows (logged once, at load)."""


def record_comparison(labels: tuple[str, str, str], served: np.ndarray, shadow: np.ndarray) -> None:
    """Update the paired metrics with rows both models scored."""
    difference = shadow.astype(np.float64) - served.astype(np.float64)
    disagreements = np.count_nonzero((shadow >= LABEL_THRESHOLD) != (served >= LABEL_THRESHOLD))
    metrics.SHADOW_ROWS_COMPARED.labels(*labels).inc(len(served))
    metrics.SHADOW_DISAGREEMENTS.labels(*labels).inc(int(disagreements))
    metrics.SHADOW_SCORE_DIFFERENCE.observe_many(*labels, difference)
    metrics.SHADOW_ABS_SCORE_DIFFERENCE.observe_many(*labels, np.abs(difference))


_Plan = list[tuple[int, np.ndarray | None]]
"""Per shadow feature: the served matrix's column, and for a categorical feature the shadow's
code of each served code (NaN where the shadow does not know the category); None when the
served matrix already is the shadow's input."""


def _column_plan(served: LoadedModel, shadow: LoadedModel) -> tuple[_Plan | None, list[str]]:
    """How to turn the served model's input matrix into the shadow's, and what prevents it."""
    have, need = served.schema, shadow.schema
    if served.named_features != shadow.named_features:
        return None, ["one model names its features and the other does not"]
    if have == need:
        return None, []
    if not served.named_features:
        widths = f"{len(need.features)} columns, the served model {len(have.features)}"
        return None, [f"the shadow takes {widths}"]
    position = {name: index for index, name in enumerate(have.features)}
    plan: _Plan = []
    missing, mistyped = [], []
    for name in need.features:
        if name not in position:
            missing.append(name)
            continue
        if (name in have.categories) != (name in need.categories):
            mistyped.append(name)
            continue
        codes = None
        if name in need.categories:
            shadow_code = {category: code for code, category in enumerate(need.categories[name])}
            codes = np.asarray(
                [shadow_code.get(category, np.nan) for category in have.categories[name]],
                dtype=np.float32,
            )
        plan.append((position[name], codes))
    problems = []
    if missing:
        problems.append(f"it needs feature(s) {missing} that requests to the served model lack")
    if mistyped:
        problems.append(f"feature(s) {mistyped} are categorical in one model, numeric in the other")
    return plan, problems


def _translate(matrix: np.ndarray, plan: _Plan | None) -> np.ndarray:
    if plan is None:
        return matrix
    columns = []
    for index, codes in plan:
        column = matrix[:, index]
        if codes is not None:
            known = ~np.isnan(column)
            recoded = np.full(len(column), np.nan, dtype=np.float32)
            recoded[known] = codes[column[known].astype(np.intp)]
            column = recoded
        columns.append(column)
    return np.column_stack(columns).astype(np.float32, copy=False)


def local_shadow_dir(
    model_uri: str, download_dir: str | Path, tracking_uri: str | None = None
) -> Path:
    """The local folder (or booster file) of a shadow model URI.

    A local path, file:// or MLflow `models:/`/`runs:/` URI as for the served model
    (`local_model_dir`); any other URI is read with pyarrow's filesystems (s3://, gs://, ...,
    credentials from the environment as pyarrow reads them) and copied into `download_dir`:
    in KServe the storage initializer downloads only the served model's storageUri.

    Raises:
        ModelLoadingError: a URI pyarrow does not understand, or nothing at it.
        ModelSourceUnavailableError: the filesystem behind the URI could not be read.
    """
    scheme = urlparse(model_uri).scheme
    if scheme in ("", "file", *MLFLOW_SCHEMES):
        return local_model_dir(model_uri, download_dir, tracking_uri)
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(model_uri)
        found = filesystem.get_file_info(path)
        if found.type == pyarrow.fs.FileType.NotFound:
            raise ModelLoadingError(f"shadow model URI {model_uri!r}: nothing there")
        destination = Path(tempfile.mkdtemp(prefix="shadow-", dir=download_dir))
        if found.type == pyarrow.fs.FileType.File:
            destination = destination / found.base_name
        pyarrow.fs.copy_files(
            path,
            str(destination),
            source_filesystem=filesystem,
            destination_filesystem=pyarrow.fs.LocalFileSystem(),
        )
    except (ValueError, NotImplementedError) as error:  # ArrowInvalid: not a URI pyarrow reads
        if isinstance(error, ModelLoadingError):
            raise
        raise ModelLoadingError(f"shadow model URI {model_uri!r}: {_first_line(error)}") from error
    except OSError as error:
        raise ModelSourceUnavailableError(
            f"shadow model URI {model_uri!r}: {_first_line(error)}"
        ) from error
    return destination


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
