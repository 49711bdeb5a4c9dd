"""How many requests a shadow (paired) and a canary (traffic split) need to see the same shift.

Run: `.venv/bin/python tests/benchmarks/bench_shadow_power.py [--simulations 2000]
[--canary-percent 10] [--alpha 0.05] [--power 0.8] [--seed 0]` (about 30 s here).

On the Telco churn table (`ctloop.pipelines.demo_data.export_telco_churn`), validated, profiled
and split as the training pipeline does, ctloop's trainer trains a champion (default
hyperparameters) and three challengers that differ slightly from it. Both score the held-out
rows (validation and test, 2112 rows): that pool stands for production traffic, one row per
request, and the challenger's true score shift is the pool's mean of (challenger − champion).

For n requests drawn from the pool (with replacement), by simulation:

- shadow (paired): every request is scored by both models; a one-sample t-test on the n
  per-row differences (two-sided, `--alpha`).
- traffic split (canary at `--canary-percent`): each request goes to the challenger with that
  probability and to the champion otherwise, and is scored by that model only; Welch's
  two-sample t-test on the two sides' scores.

Power at n is the share of `--simulations` draws whose test rejects "no shift". The table gives
the smallest n with power >= `--power` (bisection on n; each draw's row counts come from one
multinomial, so a draw costs the pool's size whatever n is; the search starts from a bracket
around the normal approximation), beside the normal approximation
(z_a/2 + z_b)^2 * var / shift^2, with var the variance of the per-row difference (paired) or
var(challenger)/p + var(champion)/(1 - p) (split). Why the paired test needs so few: the two
models' scores of one row are almost the same (correlation ~0.99), so the difference has a
fraction of either score's spread, and every request counts for both sides. Nothing here is
asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import stats

from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import reference_profile
from ctloop.components.data.split import split_table
from ctloop.components.data.validation import validate_training_table
from ctloop.components.table_io import read_table, write_parquet
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster
from ctloop.pipelines.demo_data import export_telco_churn

TARGET = "churn"
# One training thread: OpenMP threads that spin on a busy machine slow training 10x+.
CHAMPION = '{"nthread": 1}'
CHALLENGERS = {
    "scale_pos_weight 1.2": '{"nthread": 1, "scale_pos_weight": 1.2}',
    "seed 1 (other row/column samples)": '{"nthread": 1, "seed": 1}',
    "max_depth 4": '{"nthread": 1, "max_depth": 4}',
}


def held_out_scores(folder: Path) -> dict[str, np.ndarray]:
    """Champion's and each challenger's scores of the held-out rows, by name."""
    table = read_table(str(export_telco_churn(folder / "telco_churn.parquet")))
    valid = validate_training_table(table, TARGET)
    profile = reference_profile(
        valid.table,
        TARGET,
        "binary",
        valid.features,
        valid.categorical_features,
        valid.label_mapping,
    )
    schema = feature_schema(profile)
    train, validation, test = split_table(valid.table, TARGET)
    write_parquet(train, folder / "train.parquet")
    write_parquet(validation, folder / "validation.parquet")
    frame = to_frame(pa.concat_tables([validation, test]), schema)
    scores = {}
    for name, hyperparameters in {"champion": CHAMPION, **CHALLENGERS}.items():
        result = train_booster(
            folder / "train.parquet",
            folder / "validation.parquet",
            target=TARGET,
            schema=schema,
            params=parse_hyperparameters(hyperparameters, "binary"),
        )
        scores[name] = predict_scores(result.booster, frame)
    return scores


def _moments(counts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw (row of `counts`): n, mean and sample variance of the values drawn."""
    n = counts.sum(axis=1).astype(float)
    total = counts @ values
    squares = counts @ (values * values)
    mean = total / np.maximum(n, 1)
    variance = (squares - n * mean * mean) / np.maximum(n - 1, 1)
    return n, mean, np.maximum(variance, 0.0)


def paired_power(difference: np.ndarray, n: int, draws: int, alpha: float, rng) -> float:
    """Share of draws of n rows whose one-sample t-test on the differences rejects."""
    counts = rng.multinomial(n, np.full(len(difference), 1 / len(difference)), size=draws)
    n_, mean, variance = _moments(counts, difference)
    t = mean / np.sqrt(np.maximum(variance, 1e-300) / n_)
    return float(np.mean(2 * stats.t.sf(np.abs(t), n_ - 1) < alpha))


def split_power(
    challenger: np.ndarray, champion: np.ndarray, n: int, share: float, draws: int, alpha, rng
) -> float:
    """Share of draws of n requests, `share` of them to the challenger, whose Welch test on
    the two sides' scores rejects."""
    to_challenger = rng.binomial(n, share, size=draws)
    uniform = np.full(len(challenger), 1 / len(challenger))
    side_x = rng.multinomial(to_challenger, uniform)
    side_c = rng.multinomial(n - to_challenger, uniform)
    nx, mx, vx = _moments(side_x, challenger)
    nc, mc, vc = _moments(side_c, champion)
    ex, ec = vx / np.maximum(nx, 1), vc / np.maximum(nc, 1)
    t = (mx - mc) / np.sqrt(np.maximum(ex + ec, 1e-300))
    df = (ex + ec) ** 2 / np.maximum(
        ex**2 / np.maximum(nx - 1, 1) + ec**2 / np.maximum(nc - 1, 1), 1e-300
    )
    rejected = (2 * stats.t.sf(np.abs(t), df) < alpha) & (nx >= 2) & (nc >= 2)
    return float(np.mean(rejected))


def requests_needed(power_at, goal: float, guess: float) -> int:
    """Smallest n with power_at(n) >= goal: a bracket around the normal approximation
    `guess`, widened until it holds, then bisection to 2 % of n."""
    low, high = max(1, int(guess * 0.7)), max(2, int(guess * 1.4) + 1)
    while power_at(high) < goal:
        low, high = high, high * 2
    while low > 1 and power_at(low) >= goal:
        low, high = low // 2, low
    while high - low > max(1, high // 50):
        middle = (low + high) // 2
        low, high = (low, middle) if power_at(middle) >= goal else (middle, high)
    return high


def table_row(challenger: np.ndarray, champion: np.ndarray, args) -> list[str]:
    """Shift, spread, correlation, and the requests each way needs (simulated and normal)."""
    difference = challenger - champion
    shift = float(difference.mean())
    share = args.canary_percent / 100
    rng = np.random.default_rng(args.seed)
    z = stats.norm.ppf(1 - args.alpha / 2) + stats.norm.ppf(args.power)
    paired_normal = z**2 * difference.var() / shift**2
    split_normal = z**2 * (challenger.var() / share + champion.var() / (1 - share)) / shift**2
    paired = requests_needed(
        lambda n: paired_power(difference, n, args.simulations, args.alpha, rng),
        args.power,
        paired_normal,
    )
    split = requests_needed(
        lambda n: split_power(challenger, champion, n, share, args.simulations, args.alpha, rng),
        args.power,
        split_normal,
    )
    return [
        f"{shift:+.4f}",
        f"{difference.std():.4f}",
        f"{np.corrcoef(challenger, champion)[0, 1]:.3f}",
        f"{paired:,} ({paired_normal:,.0f})",
        f"{split:,} ({split_normal:,.0f})",
        f"{split / paired:,.0f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--canary-percent", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as folder:
        scores = held_out_scores(Path(folder))
    trained = time.perf_counter() - started
    champion = scores.pop("champion")
    print(
        f"Telco churn, {len(champion)} held-out rows as traffic; {args.simulations} draws per n, "
        f"two-sided alpha {args.alpha:g}, power {args.power:g}, canary at "
        f"{args.canary_percent:g} %\n"
    )
    print(
        "| challenger (vs default hyperparameters) | score shift | sd of row difference "
        "| score correlation | shadow: requests | canary split: requests | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, challenger in scores.items():
        print(f"| {name} | " + " | ".join(table_row(challenger, champion, args)) + " |")
    print(
        f"\nRequests: simulated (normal approximation). Training and scoring "
        f"{trained:.0f} s, simulation {time.perf_counter() - started - trained:.0f} s."
    )


if __name__ == "__main__":
    main()
