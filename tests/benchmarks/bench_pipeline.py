"""Wall time of the local training pipeline, split into kfp.local overhead and step work.

Runs the real `training` pipeline through kfp.local on the Telco churn table (7043 rows)
and reads kfp.local's own log timestamps: a step's *work* runs from the executor receiving
its input to it writing its output (the component body, imports included); everything
else — starting each task's interpreter, loading the component, kfp.local's bookkeeping
between tasks — is *overhead*.

    .venv/bin/python tests/benchmarks/bench_pipeline.py [--runs 1]
"""

import argparse
import io
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

from ctloop.pipelines.demo import TARGET
from ctloop.pipelines.demo_data import export_telco_churn
from ctloop.pipelines.local_logs import ANSI
from ctloop.pipelines.local_run import run_training_pipeline

TASK_START = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - Executing task '([^']+)'")
EXECUTOR = re.compile(r"\[KFP Executor \d{4}-\d\d-\d\d (\d\d:\d\d:\d\d,\d+) INFO\]: (.*)")


def _clock(text: str) -> float:
    parsed = datetime.strptime(text.replace(",", "."), "%H:%M:%S.%f")
    return parsed.hour * 3600 + parsed.minute * 60 + parsed.second + parsed.microsecond / 1e6


def step_work(log: str) -> dict[str, float]:
    """Seconds of component work per task, from kfp.local's log."""
    work, task, began = {}, None, None
    for raw in log.splitlines():
        line = ANSI.sub("", raw).strip()
        if match := TASK_START.match(line):
            task = match.group(2)
        elif (match := EXECUTOR.search(line)) and task:
            if match.group(2).startswith("Got executor_input"):
                began = _clock(match.group(1))
            elif match.group(2).startswith("Wrote executor output"):
                work[task] = _clock(match.group(1)) - began
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = export_telco_churn(Path(tmp) / "telco_churn.parquet")
        for run in range(1, args.runs + 1):
            log = io.StringIO()
            started = time.perf_counter()
            run_training_pipeline(str(data), TARGET, Path(tmp) / "work", {}, log_stream=log)
            wall = time.perf_counter() - started
            work = step_work(log.getvalue())
            total_work = sum(work.values())
            print(f"run {run}: local training pipeline on 7043 rows, {len(work)} tasks")
            print(f"  {'task':<20} {'work s':>8}")
            for task, seconds in work.items():
                print(f"  {task:<20} {seconds:>8.2f}")
            print(
                f"  wall {wall:.1f} s = step work {total_work:.1f} s "
                f"({100 * total_work / wall:.0f} %) + kfp.local overhead "
                f"{wall - total_work:.1f} s ({100 * (wall - total_work) / wall:.0f} %)"
            )


if __name__ == "__main__":
    main()
