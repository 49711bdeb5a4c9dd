"""The decision record's shape: what is written is what replay reads, and bad files are refused."""

import json

import numpy as np
import pytest

from ctloop.components.decisions import record as record_module
from ctloop.components.decisions.record import (
    DecisionRecordError,
    new_record,
    parse_record,
    read_record,
    write_record,
)


def _gate_record():
    return new_record(
        "gate",
        subject={"registered_model": "churn", "model_version": 3, "run_id": "abc"},
        inputs={"candidate": {"roc_auc": np.float64(0.81)}, "champion": None},
        policy="",
        outcome={"passed": True},
        reasons=["roc_auc 0.81 >= min 0.6"],
    )


def test_a_written_record_reads_back_equal_with_plain_json_values(tmp_path):
    record = _gate_record()
    write_record(record, tmp_path / "gate.json")
    again = read_record(tmp_path / "gate.json")
    assert again == record
    assert again.subject == {
        "registered_model": "churn",
        "model_version": "3",
        "run_id": "abc",
        "kfp_run_id": None,
    }
    assert type(again.inputs["candidate"]["roc_auc"]) is float
    assert again.code["git_commit"] == record.code["git_commit"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("outcome"), "'outcome' is missing"),
        (lambda d: d.update(kind="vote"), "kind 'vote' is not one of"),
        (lambda d: d.update(schema="other/9"), "schema is 'other/9'"),
        (lambda d: d.update(reasons="one"), "'reasons' is missing or not a JSON array"),
        (lambda d: d.update(reasons=["fine", 2]), r"'reasons' holds 2, not a string"),
        (
            lambda d: d["subject"].update(registered_model=3),
            r"subject 'registered_model' is 3, not a string or null",
        ),
    ],
)
def test_a_broken_record_is_refused_naming_the_field(tmp_path, change, message):
    document = json.loads(_gate_record().to_json())
    change(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DecisionRecordError, match=message) as caught:
        read_record(path)
    assert str(path) in str(caught.value)


def test_a_binary_or_oversized_file_is_refused_naming_it(tmp_path, monkeypatch):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DecisionRecordError, match="is not UTF-8 text") as caught:
        read_record(binary)
    assert str(binary) in str(caught.value)
    monkeypatch.setattr(record_module, "MAX_RECORD_BYTES", 200)
    big = tmp_path / "big.json"
    write_record(_gate_record(), big)
    assert big.stat().st_size > 200
    with pytest.raises(DecisionRecordError, match="larger than 200 bytes") as caught:
        read_record(big)
    assert str(big) in str(caught.value)


def test_truncated_text_and_unknown_kinds_or_subjects_are_refused():
    with pytest.raises(DecisionRecordError, match="not JSON"):
        parse_record(_gate_record().to_json()[:40])
    with pytest.raises(DecisionRecordError, match="not JSON"):
        parse_record("[" * 100_000)
    with pytest.raises(DecisionRecordError, match="kind 'vote'"):
        new_record("vote", subject={}, inputs={}, policy="", outcome={}, reasons=[])
    with pytest.raises(DecisionRecordError, match=r"unknown keys \['model'\]"):
        new_record("gate", subject={"model": "x"}, inputs={}, policy="", outcome={}, reasons=[])
    with pytest.raises(DecisionRecordError, match="inputs are not JSON"):
        new_record("gate", subject={}, inputs={"x": object()}, policy="", outcome={}, reasons=[])
