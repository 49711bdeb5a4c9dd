"""How a binary model's scores become probabilities: checked on the test split, kept in the profile.

Estimating a model's quality on an unlabelled window from its own scores (confidence-based
estimation, `ctloop.components.drift.performance_estimate`) rests on one premise: a row scored
p is positive with probability p. Evaluation has the one labelled sample that can check it,
the test split, so the check is made there (`fit_calibration`) and travels in the scored
profile (`score_calibration`), which is all the monitoring step gets of training.

The check: the expected calibration error (ECE) of the test scores is compared with what
perfectly calibrated scores of the same split show by chance (labels redrawn from the scores
`draws` times) and with a tolerance; only beyond both is an isotonic regression fitted
(scipy's pool-adjacent-violators, `scipy.optimize.isotonic_regression`, the solver
scikit-learn's `IsotonicRegression` calls), so a calibrated model's estimates do not take on a
fit's noise. The fit is kept as its breakpoints, between which probabilities are interpolated
linearly (what `IsotonicRegression(out_of_bounds="clip").predict` does), so the drift step
rebuilds it from JSON without the test rows.

The profile also keeps the test split's ROC AUC, accuracy and log loss (`label_metrics`), the
figures an estimate on a window is compared with; the same function measures a window's
realized metrics, so both sides of a "drop" are measured alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import rankdata

CALIBRATION_BINS = 10
"""Equal-width score bins of the expected calibration error."""
CALIBRATION_TOLERANCE = 0.02
"""ECE accepted as calibrated even when the split is large enough to tell it from chance."""
CALIBRATION_NULL_QUANTILE = 0.95
"""ECE beyond this quantile of perfectly calibrated scores' ECE counts as miscalibrated."""
DEFAULT_DRAWS = 300
DECISION_THRESHOLD = 0.5
"""Scores at or above it are predicted positive (accuracy), as in evaluation."""
LABEL_METRICS = ("roc_auc", "accuracy", "log_loss")
_MAX_DRAW_CELLS = 20_000_000
"""Sampled labels held at once (draws x rows), so a large split is sampled in chunks."""
_LOG_EPS = 1e-15


class CalibrationError(ValueError):
    """Scores or labels that calibration (or an estimate) cannot be computed from."""


@dataclass(frozen=True)
class Calibration:
    """How the model's scores become probabilities, and why.

    Attributes:
        method: "isotonic" when the test split showed the scores miscalibrated, else "identity".
        ece: Expected calibration error of the raw scores on the test split (None: not checked).
        ece_noise: The ECE that perfectly calibrated scores of that split reach by chance at
            `CALIBRATION_NULL_QUANTILE` (None: not checked).
        ece_calibrated: ECE of the corrected scores on the test split (in-sample).
        rows: Labelled test rows the check used.
        breakpoints: For "isotonic": increasing scores and the probability at each; other
            scores are interpolated linearly, and clipped to the ends.
    """

    method: Literal["identity", "isotonic"]
    ece: float | None = None
    ece_noise: float | None = None
    ece_calibrated: float | None = None
    rows: int = 0
    breakpoints: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @classmethod
    def identity(cls) -> Calibration:
        """Scores taken as probabilities unchecked (no labelled test split at hand)."""
        return cls(method="identity")

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability of each score."""
        if self.breakpoints is None:
            return scores
        return np.interp(scores, *self.breakpoints)

    def to_json(self) -> dict[str, Any]:
        breakpoints = None
        if self.breakpoints is not None:
            breakpoints = {
                "scores": list(self.breakpoints[0]),
                "probabilities": list(self.breakpoints[1]),
            }
        return {
            "method": self.method,
            "ece": self.ece,
            "ece_noise": self.ece_noise,
            "ece_calibrated": self.ece_calibrated,
            "rows": self.rows,
            "breakpoints": breakpoints,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any], where: str = "calibration") -> Calibration:
        """The calibration `to_json` wrote (a profile's "calibration" entry).

        Raises:
            CalibrationError: naming `where` and the field that is wrong.
        """
        method = document.get("method")
        if method not in ("identity", "isotonic"):
            raise CalibrationError(f"{where}.method is {method!r}; expected identity or isotonic")
        breakpoints = None
        if method == "isotonic":
            points = document.get("breakpoints")
            x, y = (points or {}).get("scores"), (points or {}).get("probabilities")
            if not isinstance(x, list) or not isinstance(y, list) or not x or len(x) != len(y):
                raise CalibrationError(
                    f"{where}.breakpoints needs 'scores' and 'probabilities', two lists of "
                    "the same non-zero length"
                )
            xs = probability_scores(x, f"{where}.breakpoints.scores")
            if np.any(np.diff(xs) <= 0):
                raise CalibrationError(f"{where}.breakpoints.scores must be strictly increasing")
            ys = probability_scores(y, f"{where}.breakpoints.probabilities")
            breakpoints = (tuple(xs.tolist()), tuple(ys.tolist()))
        return cls(
            method=method,
            ece=document.get("ece"),
            ece_noise=document.get("ece_noise"),
            ece_calibrated=document.get("ece_calibrated"),
            rows=int(document.get("rows") or 0),
            breakpoints=breakpoints,
        )


def score_calibration(labels: Any, scores: Any) -> dict[str, Any]:
    """The profile's "calibration" entry: the fitted calibration, the decision threshold and
    the test split's metrics (`label_metrics`) an estimate on a window is compared with.

    Raises:
        CalibrationError: see `fit_calibration`.
    """
    calibration = fit_calibration(labels, scores)
    y = binary_labels(labels, "test split labels")
    s = probability_scores(scores, "test split scores")
    return {
        **calibration.to_json(),
        "threshold": DECISION_THRESHOLD,
        "test_metrics": label_metrics(y, s, DECISION_THRESHOLD),
    }


def fit_calibration(
    labels: Any,
    scores: Any,
    *,
    tolerance: float = CALIBRATION_TOLERANCE,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> Calibration:
    """Check the scores' calibration on a labelled test split; correct it when needed.

    Miscalibrated means an ECE above `tolerance` and above the `CALIBRATION_NULL_QUANTILE`
    quantile of the ECE of `draws` label sets drawn from the scores themselves.

    Raises:
        CalibrationError: empty split, lengths that differ, labels other than 0/1, scores
            outside [0, 1] or not finite, or a split with one class only.
    """
    y = binary_labels(labels, "test split labels")
    s = probability_scores(scores, "test split scores")
    same_length(y, s, "test split labels", "test split scores")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise CalibrationError(
            f"the test split has one class only ({positives} positive of {y.size} rows): "
            "calibration cannot be checked"
        )
    ece = float(_ece(y[None, :], s)[0])
    rng = np.random.default_rng(seed)
    null = np.concatenate([_ece(sample, s) for sample in bernoulli_draws(rng, s, draws)])
    noise = float(np.quantile(null, CALIBRATION_NULL_QUANTILE))
    if ece <= max(tolerance, noise):
        return Calibration("identity", ece=ece, ece_noise=noise, ece_calibrated=ece, rows=y.size)
    x, fitted = isotonic_breakpoints(y, s)
    corrected = np.interp(s, x, fitted)
    return Calibration(
        "isotonic",
        ece=ece,
        ece_noise=noise,
        ece_calibrated=float(_ece(y[None, :], corrected)[0]),
        rows=y.size,
        breakpoints=(tuple(x.tolist()), tuple(fitted.tolist())),
    )


def isotonic_breakpoints(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The increasing step fit of labels on scores, as its breakpoints.

    Rows of equal score are pooled first (their mean label, weighted by their count), the
    pool-adjacent-violators fit runs on those, and of each run of equal fitted values only
    its two ends are kept: linear interpolation between the kept points gives every fitted
    value back, as scikit-learn's `IsotonicRegression` keeps them.
    """
    order = np.argsort(scores, kind="mergesort")
    x, starts, counts = np.unique(scores[order], return_index=True, return_counts=True)
    means = np.add.reduceat(labels[order], starts) / counts
    fitted = np.clip(isotonic_regression(means, weights=counts, increasing=True).x, 0.0, 1.0)
    keep = np.ones(x.size, dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return x[keep], fitted[keep]


def expected_calibration_error(labels: Any, scores: Any) -> float:
    """Row-weighted mean over equal-width score bins of |mean label - mean score|."""
    y = binary_labels(labels, "labels")
    s = probability_scores(scores, "scores")
    same_length(y, s, "labels", "scores")
    return float(_ece(y[None, :], s)[0])


def label_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC (None with one class only), accuracy and log loss of labelled scores."""
    metrics: dict[str, Any] = {
        "roc_auc": None,
        "accuracy": float(np.mean((scores >= threshold) == (labels == 1.0))),
        "log_loss": float(np.mean(np.where(labels == 1.0, *score_losses(scores)))),
    }
    positives = labels.sum()
    if 0 < positives < labels.size:
        metrics["roc_auc"] = float(rank_auc(labels[None, :], rankdata(scores))[0])
    return metrics


def rank_auc(samples: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """ROC AUC of each label set (a row of `samples`) against scores of the given ranks.

    The Mann-Whitney U of the positives over (positives x negatives), ties ranked at their
    mean, so they count half; NaN for a label set of one class.
    """
    y = samples.astype(np.float64)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        u = y @ ranks - positives * (positives + 1.0) / 2.0
        return u / (positives * negatives)


def score_losses(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's log loss if its label is 1, and if it is 0 (scores clipped off 0 and 1)."""
    if_positive = -np.log(np.clip(scores, _LOG_EPS, 1.0))
    if_negative = -np.log1p(-np.clip(scores, 0.0, 1.0 - _LOG_EPS))
    return if_positive, if_negative


def bernoulli_draws(rng: np.random.Generator, p: np.ndarray, draws: int) -> Iterator[np.ndarray]:
    """`draws` label sets (rows of 0/1) drawn from Bernoulli(p), at most a memory bound at once."""
    per_chunk = max(1, _MAX_DRAW_CELLS // max(p.size, 1))
    for start in range(0, draws, per_chunk):
        count = min(per_chunk, draws - start)
        yield rng.random((count, p.size)) < p


def _ece(samples: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ECE of each row of `samples` (label sets) against the scores `s`."""
    index = np.minimum((s * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    score_sums = np.bincount(index, weights=s, minlength=CALIBRATION_BINS)
    members = np.zeros((s.size, CALIBRATION_BINS))
    members[np.arange(s.size), index] = 1.0
    label_sums = samples.astype(np.float64) @ members
    return np.abs(label_sums - score_sums).sum(axis=1) / s.size


def _numbers(values: Any, what: str, error: type[ValueError]) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as problem:
        raise error(f"{what} must be numbers: {problem}") from None
    if array.size == 0:
        raise error(f"{what} are empty")
    return array


def probability_scores(
    values: Any, what: str, error: type[ValueError] = CalibrationError
) -> np.ndarray:
    """`values` as finite probabilities in [0, 1], or `error` naming `what`."""
    s = _numbers(values, what, error)
    if not np.isfinite(s).all():
        raise error(f"{what} contain {int((~np.isfinite(s)).sum())} NaN or infinite value(s)")
    if s.min() < 0.0 or s.max() > 1.0:
        raise error(f"{what} must be probabilities in [0, 1], found range [{s.min()}, {s.max()}]")
    return s


def binary_labels(
    values: Any, what: str, missing: bool = False, error: type[ValueError] = CalibrationError
) -> np.ndarray:
    """0/1 labels; with `missing`, NaN marks a row whose label has not arrived."""
    y = _numbers(values, what, error)
    bad = np.setdiff1d(np.unique(y[~np.isnan(y)] if missing else y), [0.0, 1.0])
    if bad.size:
        allowed = "0 or 1 (NaN where missing)" if missing else "0 or 1"
        raise error(f"{what} must be {allowed}, found {bad[:5].tolist()}")
    return y


def same_length(
    first: np.ndarray,
    second: np.ndarray,
    first_name: str,
    second_name: str,
    error: type[ValueError] = CalibrationError,
) -> None:
    if first.size != second.size:
        raise error(
            f"{first_name} ({first.size}) and {second_name} ({second.size}) differ in length"
        )
