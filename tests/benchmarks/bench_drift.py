"""Time, memory and decisions of ctloop's drift check against Evidently and plain scipy.

Run: `.venv/bin/python tests/benchmarks/bench_drift.py [--rows 1000000] [--windows 20] [--large]`
(`make bench` first installs Evidently from requirements-bench.lock, a lock compiled against
requirements.lock so that no pin of the project moves).

Writes synthetic Parquet files to a temporary folder, in row groups of CHUNK_ROWS: a reference
and a current window of `--rows` rows each, and a no-drift window of as many rows. Every file
has 20 float columns (normal, lognormal, gamma and uniform, 1-5 % missing) and 5 string
columns of 16-24 categories with Zipf-like shares (1 % missing). The current window has four
injected shifts: x00's mean moves by half a standard deviation, x04's spread grows 1.5x, c0's
second most common category doubles its weight, and c1 gets a new category on 3 % of its rows.
The no-drift window comes from the same generator with another seed. Each path then runs in
its own child process, so each peak memory is its own:

- ctloop profile: `pq.read_table` of the reference, then `reference_profile` (timed alone);
- ctloop window: with the profile precomputed, `iter_batches` streams the current Parquet file
  into `window_profile`, then `detect_drift` decides (the input is never loaded whole, so its
  peak is measured above the import baseline);
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` on the two DataFrames
  `pd.read_parquet` loaded (its per-column drift tests are the columns it flags);
- scipy: `ks_2samp` per float column and a chi-square contingency test per string column on
  the full loaded columns (p < 0.05 flags a column), on the drifted and on the no-drift window;
- no-drift windows: K windows (`--windows`) of 10k, 100k and 1M rows (and 10M with `--large`)
  from the generator, streamed batch by batch into `window_profile` and `detect_drift`.

Peak memory is the kernel's RSS high-water mark (VmHWM), reset after the input is loaded, less
the RSS at that point. Times of Evidently and scipy leave out loading their input; ctloop's
window pass includes reading the Parquet file. Goals, printed beside the figures: the window
pass >= 300x faster than Evidently and >= 15x faster than scipy, peak memory <= 64 MB above
the input, a profile build < 1 s per 1M rows x 25 columns, <= 1 % of no-drift windows flagged,
and every injected shift caught. Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

NUMERIC = [f"x{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
FEATURES = NUMERIC + CATEGORICAL
LEVEL_COUNTS = {name: count for name, count in zip(CATEGORICAL, (20, 16, 24, 18, 22), strict=True)}
LEVELS = {name: [f"{name}_level{j:02d}" for j in range(k)] for name, k in LEVEL_COUNTS.items()}
NEW_CATEGORY = "c1_new"
INJECTED = {
    "x00": "mean + 0.5 std",
    "x04": "std x 1.5",
    "c0": "2nd category's weight x 2",
    "c1": "new category on 3 % of rows",
}
CHUNK_ROWS = 250_000
STREAM_ROWS = 65_536
WINDOW_SIZES = (10_000, 100_000, 1_000_000)
LARGE_WINDOW = 10_000_000
SEEDS = {"reference": 1, "current": 2, "nodrift": 3}

GOAL_EVIDENTLY_SPEEDUP = 300
GOAL_SCIPY_SPEEDUP = 15
GOAL_PEAK_MB = 64
GOAL_PROFILE_S_PER_1M_X_25 = 1.0
GOAL_FALSE_ALARM_SHARE = 0.01


def generate(rows: int, seed: int, *, drifted: bool, chunk_rows: int) -> Iterator:
    """Record batches of `rows` synthetic rows; the four injected shifts when `drifted`."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    dictionaries = {name: pa.array([*LEVELS[name], NEW_CATEGORY]) for name in CATEGORICAL}
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        columns = {}
        for i, name in enumerate(NUMERIC):
            values = _numeric(rng, i, n, drifted=drifted)
            missing = rng.random(n) < 0.01 + 0.01 * (i % 5)
            columns[name] = pa.array(values, mask=missing)
        for name in CATEGORICAL:
            weights = 1.0 / np.arange(1, LEVEL_COUNTS[name] + 1) ** 0.9
            if drifted and name == "c0":
                weights[1] *= 2.0
            codes = rng.choice(len(weights), size=n, p=weights / weights.sum())
            if drifted and name == "c1":
                codes[rng.random(n) < 0.03] = LEVEL_COUNTS[name]
            missing = rng.random(n) < 0.01
            indices = pa.array(codes.astype(np.int32), mask=missing)
            columns[name] = dictionaries[name].take(indices)
        yield pa.record_batch(columns)


def _numeric(rng, i: int, n: int, *, drifted: bool):
    kind = i % 4
    if kind == 0:
        loc, scale = float(i), 1.0 + i / 10.0
        z = rng.standard_normal(n)
        if drifted and i == 0:
            z += 0.5
        if drifted and i == 4:
            z *= 1.5
        return loc + scale * z
    if kind == 1:
        return rng.lognormal(0.0, 0.7, n) * (1.0 + i)
    if kind == 2:
        return rng.gamma(2.0, 1.0 + i / 5.0, n)
    return rng.uniform(-i, 10.0 + i, n)


def write_files(folder: Path, rows: int) -> None:
    import pyarrow.parquet as pq

    for name, seed in SEEDS.items():
        writer = None
        batches = generate(rows, seed, drifted=name == "current", chunk_rows=CHUNK_ROWS)
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(folder / f"{name}.parquet", batch.schema)
            writer.write_batch(batch)
        writer.close()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Memory:
    """RSS at `mark()` and the high-water mark above it since (VmHWM, reset at the mark)."""

    def __init__(self) -> None:
        self.start_kb = _status_kb("VmRSS")
        self.base_kb = self.start_kb

    def mark(self) -> None:
        self.base_kb = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS

    def figures(self) -> dict:
        return {
            "input_mb": (self.base_kb - self.start_kb) / 1024,
            "peak_above_mb": (_status_kb("VmHWM") - self.base_kb) / 1024,
        }


def child_profile(folder: Path, args: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    from ctloop.components.data.profile import reference_profile

    memory = Memory()
    started = time.perf_counter()
    table = pq.read_table(folder / "reference.parquet", columns=FEATURES)
    load = time.perf_counter() - started
    memory.mark()
    started = time.perf_counter()
    profile = reference_profile(table, "", "binary", FEATURES, CATEGORICAL, None)
    wall = time.perf_counter() - started
    figures = memory.figures()
    (folder / "profile.json").write_text(json.dumps(profile))
    return {"load_s": load, "wall_s": wall, "rows": table.num_rows, **figures}


def child_ctloop(folder: Path, args: argparse.Namespace) -> dict:
    from ctloop.components.drift.detection import detect_drift
    from ctloop.components.drift.window_profile import window_profile
    from ctloop.components.table_io import iter_batches

    profile = json.loads((folder / "profile.json").read_text())
    memory = Memory()
    memory.mark()
    started = time.perf_counter()
    counted = window_profile(iter_batches(str(folder / "current.parquet"), FEATURES), profile)
    counting = time.perf_counter() - started
    result = detect_drift(profile, counted)
    wall = time.perf_counter() - started
    return {
        "load_s": 0.0,
        "wall_s": wall,
        "detect_s": wall - counting,
        "rows": counted.rows,
        "flagged": list(result.drifted_features),
        "dataset_drift": result.drift_detected,
        "drift_share": result.drift_share,
        **memory.figures(),
    }


def child_evidently(folder: Path, args: argparse.Namespace) -> dict:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "do-not-track")
    try:
        import evidently
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except ImportError as error:
        return {"unavailable": f"evidently cannot be imported ({error})"}
    import pandas as pd

    memory = Memory()
    started = time.perf_counter()
    reference = pd.read_parquet(folder / "reference.parquet", columns=FEATURES)
    current = pd.read_parquet(folder / "current.parquet", columns=FEATURES)
    load = time.perf_counter() - started
    memory.mark()
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
    wall = time.perf_counter() - started
    figures = memory.figures()
    flagged, share, methods = [], None, set()
    for test in snapshot.dict()["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if test.get("id") == "drift" and test.get("status") == "FAIL" and "column" in params:
            flagged.append(params["column"])
    for metric in snapshot.dict()["metrics"]:
        if metric["config"]["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
        if metric["config"].get("method"):
            methods.add(f"{metric['config']['method']} (threshold {metric['config']['threshold']})")
    return {
        "load_s": load,
        "wall_s": wall,
        "rows": len(current),
        "flagged": flagged,
        "dataset_drift": share is not None and share >= 0.5,
        "drift_share": share,
        "version": evidently.__version__,
        "methods": sorted(methods),
        **figures,
    }


def child_scipy(folder: Path, args: argparse.Namespace) -> dict:
    import numpy as np
    import pandas as pd
    from scipy import stats

    memory = Memory()
    started = time.perf_counter()
    reference = pd.read_parquet(folder / "reference.parquet", columns=FEATURES)
    current = pd.read_parquet(folder / f"{args.window}.parquet", columns=FEATURES)
    load = time.perf_counter() - started
    memory.mark()
    started = time.perf_counter()
    p_values = {}
    for name in NUMERIC:
        ref = reference[name].dropna().to_numpy()
        cur = current[name].dropna().to_numpy()
        p_values[name] = float(stats.ks_2samp(ref, cur).pvalue)
    for name in CATEGORICAL:
        counts = pd.concat(
            [reference[name].value_counts(), current[name].value_counts()], axis=1
        ).fillna(0)
        table = np.asarray(counts, dtype=np.float64).T
        p_values[name] = float(stats.chi2_contingency(table, correction=False).pvalue)
    wall = time.perf_counter() - started
    return {
        "load_s": load,
        "wall_s": wall,
        "rows": len(current),
        "flagged": [name for name in FEATURES if p_values[name] < 0.05],
        "dataset_drift": None,
        "drift_share": None,
        **memory.figures(),
    }


def child_nodrift(folder: Path, args: argparse.Namespace) -> dict:
    from ctloop.components.drift.detection import detect_drift
    from ctloop.components.drift.window_profile import window_profile

    profile = json.loads((folder / "profile.json").read_text())
    sizes = [*WINDOW_SIZES, *([LARGE_WINDOW] if args.large else [])]
    rows = []
    for size in sizes:
        any_flagged, dataset_flagged, severity, features = 0, 0, 0.0, set()
        started = time.perf_counter()
        for k in range(args.windows):
            seed = 1_000 + 100 * k + sizes.index(size)
            batches = generate(size, seed, drifted=False, chunk_rows=STREAM_ROWS)
            result = detect_drift(profile, window_profile(batches, profile))
            any_flagged += bool(result.drifted_features)
            dataset_flagged += result.drift_detected
            features.update(result.drifted_features)
            severity = max(severity, *(f["severity"] for f in result.features.values()))
        rows.append(
            {
                "size": size,
                "windows": args.windows,
                "any_feature": any_flagged,
                "dataset": dataset_flagged,
                "max_severity": severity,
                "features": sorted(features),
                "wall_s": time.perf_counter() - started,
            }
        )
    return {"sizes": rows}


CHILDREN = {
    "profile": child_profile,
    "ctloop": child_ctloop,
    "evidently": child_evidently,
    "scipy": child_scipy,
    "nodrift": child_nodrift,
}


def run_child(name: str, folder: Path, args: argparse.Namespace, window: str = "current") -> dict:
    command = [sys.executable, __file__, "--child", name, "--dir", str(folder)]
    command += ["--rows", str(args.rows), "--windows", str(args.windows), "--window", window]
    command += ["--large"] if args.large else []
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-3:]
        return {"unavailable": f"child exited {completed.returncode}: {' | '.join(tail)}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _rate(cells: float, seconds: float) -> str:
    return f"{cells / seconds / 1e6:.1f}M" if seconds > 0 else "—"


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def print_paths(results: dict, rows: int) -> None:
    cells = rows * len(FEATURES)
    print(
        f"{'path':<24}{'load s':>8}{'wall s':>9}{'cells/s':>9}{'input MB':>10}"
        f"{'peak above MB':>15}  above"
    )
    for name, row in results.items():
        if "unavailable" in row:
            print(f"{name:<24}unavailable: {row['unavailable']}")
            continue
        above = "import baseline (streamed)" if name == "ctloop window" else "loaded input"
        print(
            f"{name:<24}{row['load_s']:>8.2f}{row['wall_s']:>9.2f}{_rate(cells, row['wall_s']):>9}"
            f"{row['input_mb']:>10.0f}{row['peak_above_mb']:>15.1f}  {above}"
        )
    print("cells/s: window rows x 25 columns per second of wall (reference cells for the profile)")
    if "detect_s" in results["ctloop window"]:
        print(
            f"ctloop window: of its wall, detect_drift {results['ctloop window']['detect_s']:.3f} s"
        )


def print_flags(results: dict) -> None:
    print(f"\ncolumns flagged on the drifted window (injected: {', '.join(INJECTED)})")
    for name in ("ctloop window", "Evidently", "scipy p<0.05", "scipy p<0.05 no-drift"):
        row = results.get(name, {})
        if "flagged" not in row:
            continue
        flagged = [column for column in FEATURES if column in row["flagged"]]
        caught = [column for column in INJECTED if column in flagged]
        others = [column for column in flagged if column not in INJECTED]
        decision = ""
        if row.get("drift_share") is not None:
            verdict = "drift" if row["dataset_drift"] else "no drift"
            decision = f"; dataset: {verdict} (share {row['drift_share']:.2f})"
        if name.endswith("no-drift"):
            print(f"  {name:<22} {len(flagged)}/{len(FEATURES)} columns: {' '.join(flagged)}")
            continue
        print(
            f"  {name:<22} {' '.join(flagged) or '(none)'}  [injected caught "
            f"{len(caught)}/{len(INJECTED)}, other columns {len(others)}{decision}]"
        )


def print_nodrift(nodrift: dict) -> int:
    if "unavailable" in nodrift:
        print(f"\nno-drift windows: unavailable: {nodrift['unavailable']}")
        return -1
    print("\nctloop on no-drift windows (same generator, other seeds)")
    print(
        f"{'window rows':>12}{'windows':>9}{'any feature':>13}{'dataset':>9}"
        f"{'max severity':>14}{'s/window':>10}  features flagged"
    )
    flagged = 0
    for row in nodrift["sizes"]:
        flagged += row["any_feature"]
        print(
            f"{row['size']:>12}{row['windows']:>9}{row['any_feature']:>13}{row['dataset']:>9}"
            f"{row['max_severity']:>14.2f}{row['wall_s'] / row['windows']:>10.2f}  "
            f"{' '.join(row['features']) or '—'}"
        )
    print(
        "any feature: windows with at least one drifted feature; dataset: drift_detected; "
        "max severity: the largest measure / threshold of any feature (> 1 flags it); "
        "s/window: generating and checking one window"
    )
    return flagged


def print_goals(results: dict, flagged: int, windows: int, rows: int) -> None:
    ours = results["ctloop window"]
    profile = results["ctloop profile"]
    print("\ngoals (not asserted)")
    if "unavailable" in ours:
        print("  ctloop window pass unavailable: no goal can be judged")
        return
    for name, goal in (("Evidently", GOAL_EVIDENTLY_SPEEDUP), ("scipy p<0.05", GOAL_SCIPY_SPEEDUP)):
        other = results.get(name, {})
        if "wall_s" not in other:
            print(f"  window pass >= {goal}x faster than {name}: unavailable")
            continue
        speedup = other["wall_s"] / ours["wall_s"]
        print(
            f"  window pass >= {goal}x faster than {name}: {speedup:.0f}x  {_goal(speedup >= goal)}"
        )
    peak = ours["peak_above_mb"]
    print(
        f"  window pass peak <= {GOAL_PEAK_MB} MB above input: {peak:.1f} MB  "
        f"{_goal(peak <= GOAL_PEAK_MB)}"
    )
    if "wall_s" in profile:
        scaled = profile["wall_s"] * 1e6 / rows
        print(
            f"  profile build < {GOAL_PROFILE_S_PER_1M_X_25:.0f} s per 1M x 25: {scaled:.2f} s "
            f"({profile['wall_s']:.2f} s for {rows} rows)  "
            f"{_goal(scaled < GOAL_PROFILE_S_PER_1M_X_25)}"
        )
    if flagged >= 0:
        share = flagged / windows
        print(
            f"  <= {GOAL_FALSE_ALARM_SHARE:.0%} of no-drift windows flagged: {flagged}/{windows} "
            f"({share:.1%})  {_goal(share <= GOAL_FALSE_ALARM_SHARE)}"
        )
    caught = [column for column in INJECTED if column in ours.get("flagged", [])]
    print(
        f"  every injected shift caught: {len(caught)}/{len(INJECTED)}  "
        f"{_goal(len(caught) == len(INJECTED))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=20, help="no-drift windows per size")
    parser.add_argument("--large", action="store_true", help="also 10M-row no-drift windows")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--window", default="current", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.write:
        write_files(args.write, args.rows)
        return
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.dir, args)))
        return

    with tempfile.TemporaryDirectory(prefix="ctloop-bench-drift-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        # Written by a child, so this process stays small and starts its children small.
        subprocess.run([sys.executable, __file__, "--write", tmp, "--rows", str(args.rows)])
        size_mb = (folder / "current.parquet").stat().st_size / 2**20
        print(
            f"data: {args.rows} reference, current and no-drift rows each ({size_mb:.0f} MB "
            f"Parquet a file), {len(NUMERIC)} float + {len(CATEGORICAL)} string columns; "
            f"written in {time.perf_counter() - started:.1f} s; injected: "
            + "; ".join(f"{column} {what}" for column, what in INJECTED.items())
        )
        results = {"ctloop profile": run_child("profile", folder, args)}
        results["ctloop window"] = run_child("ctloop", folder, args)
        results["Evidently"] = run_child("evidently", folder, args)
        results["scipy p<0.05"] = run_child("scipy", folder, args)
        results["scipy p<0.05 no-drift"] = run_child("scipy", folder, args, window="nodrift")
        nodrift = run_child("nodrift", folder, args)

    if "version" in results["Evidently"]:
        evidently = results["Evidently"]
        print(
            f"Evidently {evidently['version']}, DataDriftPreset defaults: "
            + "; ".join(evidently["methods"])
        )
    print_paths(results, args.rows)
    print_flags(results)
    flagged = print_nodrift(nodrift)
    windows = sum(row["windows"] for row in nodrift.get("sizes", []))
    print_goals(results, flagged, windows, args.rows)


if __name__ == "__main__":
    main()
