"""Tests of dynstab.training.history."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dynstab.training import History


def sample_history() -> History:
    h = History(metadata={"lr": 0.1})
    for t in range(5):
        h.append(t, loss=1.0 / (t + 1), lr=0.1)
    h.update(0, {"lambda_max": 3.0, "test.err": np.float64(0.5)})
    h.update(4, {"lambda_max": torch.tensor(19.5), "skipped": None})
    h.append(5, loss=math.inf)
    h.append(6, loss=math.nan, lr=-math.inf)
    return h


def test_as_arrays_per_name_with_different_steps() -> None:
    h = sample_history()
    s, v = h.as_arrays("lambda_max")
    assert s.tolist() == [0, 4]
    assert v.tolist() == [3.0, 19.5]
    assert s.dtype == np.int64
    assert v.dtype == np.float64
    assert h.names == ["loss", "lr", "lambda_max", "test.err"]
    assert h.steps == list(range(7))
    assert len(h) == 7
    assert "lambda_max" in h
    assert "skipped" not in h
    assert h.last("lambda_max") == 19.5
    assert h.at(4) == {"loss": 0.2, "lr": 0.1, "lambda_max": 19.5}


def test_json_round_trip_keeps_nonfinite_values() -> None:
    h = sample_history()
    text = h.to_json()
    json.loads(text)  # strict JSON: no bare NaN/Infinity
    assert "NaN" in text
    assert "Infinity" in text
    h2 = History.from_json(text)
    assert h2 == h
    assert h2.metadata == {"lr": 0.1}
    assert math.isnan(h2.at(6)["loss"])
    assert h2.at(6)["lr"] == -math.inf
    assert h2.at(5)["loss"] == math.inf


def test_csv_is_wide_with_blanks() -> None:
    rows = list(csv.reader(io.StringIO(sample_history().to_csv())))
    assert rows[0] == ["step", "loss", "lr", "lambda_max", "test.err"]
    assert rows[1] == ["0", "1.0", "0.1", "3.0", "0.5"]
    assert rows[2] == ["1", "0.5", "0.1", "", ""]
    assert float(rows[7][1]) != float(rows[7][1])  # nan


def test_save_is_atomic_and_loadable(tmp_path: Path) -> None:
    h = sample_history()
    p = h.save(tmp_path / "sub" / "history.json")
    assert History.load(p) == h
    c = h.save(tmp_path / "history.csv")
    assert c.read_text().startswith("step,loss")
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["history.csv", "history.json", "sub"]


def test_errors() -> None:
    h = sample_history()
    with pytest.raises(KeyError, match="recorded names are"):
        h.as_arrays("trace")
    with pytest.raises(ValueError, match="already holds 'loss' at step 0"):
        h.append(0, loss=2.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        h.append(-1, loss=1.0)
    with pytest.raises(TypeError, match="step must be an int"):
        h.append(1.0, loss=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real scalars"):
        h.append(9, loss="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'records'"):
        History.from_dict({"steps": []})
    with pytest.raises(ValueError, match="needs a 'step'"):
        History.from_dict({"records": [{"loss": 1.0}]})
    with pytest.raises(ValueError, match="numbers or"):
        History.from_dict({"records": [{"step": 0, "loss": "big"}]})
