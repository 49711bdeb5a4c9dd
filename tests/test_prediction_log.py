"""The prediction log: what the server records is what lands in the Parquet files, the request
never waits for it or fails because of it, and a reader never sees half a file."""

import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY

from ctloop.components.contract import prediction_log as contract
from ctloop.components.table_io import read_table
from ctloop.serving import prediction_log
from ctloop.serving.prediction_log import PredictionLog


def _frame(rows: int, start: int = 0) -> pd.DataFrame:
    values = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "tenure": values.astype(np.float32),
            "contract": pd.Categorical(
                np.where(values % 2 == 0, "Month-to-month", "Two year"),
                categories=["Month-to-month", "One year", "Two year"],
            ),
        }
    )


def _dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "ctloop_prediction_log_rows_dropped_total", {"reason": reason}
    )
    return value or 0.0


def _files(root) -> list:
    return sorted(root.rglob("*.parquet"))


def test_rows_written_are_the_rows_recorded(tmp_path):
    requests = [("req-a", "v1", "1", 3), ("req-b", "v2", None, 1), ("req-c", "v2", "2", 4)]
    recorded = []
    with PredictionLog(str(tmp_path), flush_interval_s=3600) as log:
        for number, (request_id, variant, version, rows) in enumerate(requests):
            frame = _frame(rows, start=10 * number)
            scores = np.linspace(0.1, 0.9, rows)
            log.record(
                request_id=request_id,
                variant=variant,
                model_version=version,
                frame=frame,
                scores=scores,
            )
            hashes = contract.row_hashes(frame)
            recorded += [
                (request_id, row, variant, version, hashes[row], scores[row]) for row in range(rows)
            ]
    table = read_table(str(tmp_path))
    assert table.schema.names == [*contract.LOG_COLUMNS, contract.PARTITION_KEY]
    for file in _files(tmp_path):
        assert pq.read_schema(file).equals(contract.PREDICTION_LOG_SCHEMA)
    written = table.to_pandas().sort_values(["request_id", "row"])
    assert [
        (r.request_id, r.row, r.variant, r.model_version, r.inputs_hash, r.score)
        for r in written.itertuples()
    ] == recorded
    assert written["time"].dt.strftime("%Y-%m-%d").eq(written["date"].astype(str)).all()


def test_files_roll_at_rows_per_file(tmp_path):
    with PredictionLog(str(tmp_path), rows_per_file=4, flush_interval_s=3600) as log:
        for number in range(5):
            log.record(
                request_id=f"r{number}",
                variant="v1",
                model_version="1",
                frame=_frame(2),
                scores=np.full(2, 0.5),
            )
    files = _files(tmp_path)
    assert len(files) >= 3
    assert all(pq.read_metadata(file).num_rows <= 4 for file in files)
    assert sum(pq.read_metadata(file).num_rows for file in files) == 10
    assert all(file.parent.name.startswith("date=") for file in files)


def test_a_row_is_written_within_the_flush_interval(tmp_path):
    log = PredictionLog(str(tmp_path), rows_per_file=1000, flush_interval_s=0.05)
    log.record(request_id="r", variant="v1", model_version="1", frame=_frame(1), scores=np.ones(1))
    for _ in range(500):  # only the interval can write it: rows_per_file is far, no flush()
        if _files(tmp_path):
            break
        time.sleep(0.02)
    assert _files(tmp_path), "nothing written 10 s after a 0.05 s flush interval"
    log.close()
    assert read_table(str(tmp_path)).num_rows == 1


def test_close_writes_what_is_pending_and_later_rows_are_dropped(tmp_path):
    log = PredictionLog(str(tmp_path), rows_per_file=1000, flush_interval_s=3600)
    log.record(request_id="r", variant="v1", model_version="1", frame=_frame(3), scores=np.ones(3))
    assert _files(tmp_path) == []
    closed_before = _dropped("closed")
    log.close()
    assert read_table(str(tmp_path)).num_rows == 3
    log.record(request_id="s", variant="v1", model_version="1", frame=_frame(2), scores=np.ones(2))
    assert _dropped("closed") == closed_before + 2


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path, monkeypatch):
    writing = threading.Event()
    release = threading.Event()
    build = prediction_log._log_table

    def stalled(entries):  # storage that does not answer: the writer thread hangs here
        writing.set()
        release.wait()
        return build(entries)

    monkeypatch.setattr(prediction_log, "_log_table", stalled)
    log = PredictionLog(str(tmp_path), rows_per_file=4, flush_interval_s=3600, max_pending_rows=6)
    dropped_before = _dropped("buffer_full")

    def record(request_id: str, rows: int) -> None:
        log.record(
            request_id=request_id,
            variant="v1",
            model_version="1",
            frame=_frame(rows),
            scores=np.zeros(rows),
        )

    record("first", 4)  # reaches rows_per_file: the thread takes it and stalls writing it
    assert writing.wait(10)
    caller = threading.Thread(target=lambda: [record("second", 2), record("third", 3)])
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "record() waited for the stalled writer"
    assert _dropped("buffer_full") == dropped_before + 3  # 4 + 2 held; 3 more would pass 6
    release.set()
    log.close()
    written = read_table(str(tmp_path)).column("request_id").to_pylist()
    assert sorted(set(written)) == ["first", "second"]


def test_frames_waiting_to_be_hashed_are_bounded_by_request_count(tmp_path, monkeypatch):
    hashing = threading.Event()
    release = threading.Event()
    build = prediction_log._log_table

    def stalled(entries):
        hashing.set()
        release.wait()
        return build(entries)

    monkeypatch.setattr(prediction_log, "_log_table", stalled)
    log = PredictionLog(str(tmp_path), max_pending_requests=2, max_pending_rows=1000)
    dropped_before = _dropped("buffer_full")

    def record(number: int) -> None:
        log.record(
            request_id=f"r{number}",
            variant="v1",
            model_version="1",
            frame=_frame(1),
            scores=np.zeros(1),
        )

    record(0)  # the thread takes it and hangs hashing it
    assert hashing.wait(10)
    for number in range(1, 6):
        record(number)
    assert _dropped("buffer_full") == dropped_before + 3  # two frames may wait, not five
    release.set()
    log.close()
    assert sorted(read_table(str(tmp_path)).column("request_id").to_pylist()) == ["r0", "r1", "r2"]


def test_an_unwritable_log_is_reported_once_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    failed_before = _dropped("write_failed")
    log = PredictionLog(str(blocker / "log"), flush_interval_s=3600)
    with caplog.at_level(logging.ERROR, logger=prediction_log.__name__):
        for number in range(3):
            log.record(
                request_id=f"r{number}",
                variant="v1",
                model_version="1",
                frame=_frame(2),
                scores=np.zeros(2),
            )
            assert log.flush(10)
        log.close()
    reports = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(reports) == 1
    assert str(blocker / "log") in reports[0].getMessage()
    assert _dropped("write_failed") == failed_before + 6


def test_mismatched_scores_are_logged_not_raised(tmp_path, caplog):
    with PredictionLog(str(tmp_path)) as log, caplog.at_level(logging.ERROR):
        log.record(
            request_id="r", variant="v1", model_version="1", frame=_frame(3), scores=np.ones(2)
        )
    assert "2 scores for 3 rows" in caplog.text
    assert _files(tmp_path) == []


def test_partial_files_are_hidden_from_readers(tmp_path):
    with PredictionLog(str(tmp_path)) as log:
        log.record(
            request_id="r", variant="v1", model_version="1", frame=_frame(2), scores=np.ones(2)
        )
    day = next(tmp_path.glob("date=*"))
    (day / ".part-unfinished.parquet.partial").write_bytes(b"PAR1 half a file")
    assert read_table(str(tmp_path)).num_rows == 2


@pytest.mark.parametrize(
    "option",
    [
        {"rows_per_file": 0},
        {"flush_interval_s": -1},
        {"max_pending_rows": 0},
        {"max_pending_requests": 0},
    ],
)
def test_settings_must_be_positive(tmp_path, option):
    with pytest.raises(ValueError, match=f"{next(iter(option))} must be > 0"):
        PredictionLog(str(tmp_path), **option)


def test_row_hashes_are_the_same_in_another_process():
    frame = _frame(5)
    script = (
        "import numpy as np, pandas as pd\n"
        "from ctloop.components.contract.prediction_log import row_hashes\n"
        "values = np.arange(5)\n"
        "frame = pd.DataFrame({'tenure': values.astype(np.float32), 'contract': pd.Categorical("
        "np.where(values % 2 == 0, 'Month-to-month', 'Two year'), "
        "categories=['Month-to-month', 'One year', 'Two year'])})\n"
        "print(' '.join(row_hashes(frame)))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert other == contract.row_hashes(frame)
    assert len(set(other)) == 5  # different rows, different hashes
    assert contract.row_hashes(frame.iloc[[2]]) == [other[2]]  # a row's hash is its own


def test_row_hashes_follow_values_not_dtypes_codes_or_batches():
    numbers = pd.DataFrame({"x": np.array([1.5, np.nan, -0.0], dtype=np.float32)})
    same = pd.DataFrame({"x": [1.5, float("nan"), 0.0]})
    assert contract.row_hashes(numbers) == contract.row_hashes(same)
    one = pd.DataFrame({"c": pd.Categorical(["b", None], categories=["a", "b"])})
    other = pd.DataFrame({"c": pd.Categorical(["b", None], categories=["b", "z", "a"])})
    assert contract.row_hashes(one) == contract.row_hashes(other)  # by value, not by code
    frames = [_frame(3, start=0), numbers, _frame(2, start=7)]
    together = contract.hex_digests(contract.hash_frames(frames))
    assert together == [digest for frame in frames for digest in contract.row_hashes(frame)]
    swapped = _frame(1)[["contract", "tenure"]]
    assert contract.row_hashes(swapped) != contract.row_hashes(_frame(1))  # order counts
    with pytest.raises(ValueError, match="without columns"):
        contract.row_hashes(pd.DataFrame(index=[0]))
