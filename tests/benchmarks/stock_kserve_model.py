"""The "stock KServe" peer of bench_serving.py: a minimal custom KServe predictor for XGBoost.

Run: `.venv/bin/python tests/benchmarks/stock_kserve_model.py MODEL_JSON PORT [NAME]`.

What a KServe user writes from the documentation: a `kserve.Model` whose `predict` turns the
v1 `instances` into a numpy array and calls `booster.inplace_predict` with XGBoost's default
settings (all CPU threads, float64 input), started by `kserve.ModelServer` with its defaults.
Being a plain `def`, `predict` runs on the event loop. KServe binds its REST port on 0.0.0.0
(hard-coded in 0.21). Positional arguments only: kserve.model_server parses sys.argv at
import and would claim (and abbreviate-match) option flags.
"""

from __future__ import annotations

import sys

import kserve
import numpy as np
import xgboost as xgb


class StockXGBoostModel(kserve.Model):
    """v1 only: `{"instances": [[...], ...]}` -> `{"predictions": [...]}`."""

    def __init__(self, name: str, model_file: str) -> None:
        super().__init__(name)
        self.model_file = model_file
        self.booster: xgb.Booster | None = None

    def load(self) -> bool:
        self.booster = xgb.Booster(model_file=self.model_file)
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        scores = self.booster.inplace_predict(np.asarray(payload["instances"]))
        return {"predictions": scores.tolist()}


def main() -> None:
    model_file, port = sys.argv[1], int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "model"
    model = StockXGBoostModel(name, model_file)
    model.load()
    kserve.ModelServer(http_port=port, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
