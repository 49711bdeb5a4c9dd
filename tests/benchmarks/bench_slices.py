"""What judging slices adds to the evaluation and the gate, on synthetic rows.

Run: `.venv/bin/python tests/benchmarks/bench_slices.py [--rows 1000000]`

The evaluation slices both models' scores by two categorical columns (20 and 2 values) and one
numeric column cut into 10 quantile bins (`evaluation_slices`, the champion cut at the
candidate's cut points), and counts unseen categories of a 20-value feature whose profile knows
18; the gate then judges the result (per-group floor and regression, one gap bound) and draws
its Markdown. Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from ctloop.components.evaluate.evaluation import evaluation_slices, unseen_categories
from ctloop.components.gate.decision import decision_markdown, run_gate
from ctloop.components.gate.policy import parse_gate_policy

POLICY = json.dumps(
    {
        "slices": {
            "categorical": ["region", "female"],
            "numeric": {"tenure": 10},
            "thresholds": {"roc_auc": {"min": 0.4}},
            "champion_comparison": {"tpr": {"direction": "higher", "max_regression": 0.05}},
            "max_gap": {"female": {"tpr": 0.1}},
        }
    }
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "region": rng.choice([f"r{i}" for i in range(20)], rows),
            "female": rng.integers(0, 2, rows),
            "tenure": rng.random(rows) * 72,
        }
    )
    labels = rng.integers(0, 2, rows)
    candidate, champion = rng.random(rows), rng.random(rows)
    slicing = parse_gate_policy(POLICY, "binary").slices

    start = time.perf_counter()
    slices = evaluation_slices(table, labels, candidate, champion, slicing)
    sliced = time.perf_counter() - start
    evaluated = {"task": "binary", "candidate": {}, "champion": {}, "slices": slices}
    start = time.perf_counter()
    decision = run_gate(POLICY, evaluated)
    markdown = decision_markdown(decision)
    judged = time.perf_counter() - start
    profile = {
        "features": {
            "region": {"kind": "categorical", "categories": {f"r{i}": 0.05 for i in range(18)}}
        }
    }
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    start = time.perf_counter()
    unseen = unseen_categories(arrow, profile)
    counted = time.perf_counter() - start

    groups = sum(len(column["slices"]) for column in slices["candidate"])
    print(f"| step ({rows} rows) | seconds |")
    print("| --- | ---: |")
    print(f"| slices of both models ({groups} groups) | {sliced:.3f} |")
    print(
        f"| gate: {len(decision.checks)} checks + Markdown ({len(markdown)} chars) | {judged:.4f} |"
    )
    print(f"| unseen categories ({unseen['region']['rows']} rows) | {counted:.3f} |")


if __name__ == "__main__":
    main()
