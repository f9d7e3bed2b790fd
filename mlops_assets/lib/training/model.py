"""A trained model as the serving code path sees it: booster + contract + threshold, loaded
from one directory (a BentoML model's path). Evaluation, the gate's smoke test and the
BentoML service all predict through this class."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets import bulk_threads
from mlops_assets.config import DatasetContract
from mlops_assets.lib.dataset import features
from mlops_assets.lib.training.calibration import Calibrator

if TYPE_CHECKING:
    import lightgbm as lgb

BOOSTER_FILE = "booster.txt"
CONTRACT_FILE = "contract.json"
SERVING_FILE = "serving.json"
REFERENCE_FILE = "reference.parquet"  # a sample of the training features + predictions
PREDICTION = "_prediction"  # the reference's column of predictions (drift compares it)
CALIBRATOR_FILE = "calibrator.json"  # only in a recalibrated version (lib/training/calibration.py)


def write_model_dir(
    path: Path, booster: lgb.Booster, contract: DatasetContract, threshold: float,
    best_iteration: int, reference: pd.DataFrame | None = None,
    calibrator: Calibrator | None = None,
) -> None:
    """Write everything needed to serve and monitor the model into ``path`` (a fresh
    directory): the booster, its contract and threshold, the drift reference, and the
    calibrator that maps the booster's scores to probabilities, if any."""
    path = Path(path)
    if reference is not None:
        reference.to_parquet(path / REFERENCE_FILE, index=False)
    if calibrator is not None:
        (path / CALIBRATOR_FILE).write_text(json.dumps(calibrator.to_dict(), indent=2))
    booster.save_model(str(path / BOOSTER_FILE), num_iteration=best_iteration)
    (path / CONTRACT_FILE).write_text(contract.model_dump_json(indent=2))
    (path / SERVING_FILE).write_text(
        json.dumps({"threshold": threshold, "features": contract.features}, indent=2)
    )


@dataclass
class ServingModel:
    booster: lgb.Booster
    contract: DatasetContract
    threshold: float
    version: str
    calibrator: Calibrator | None = None  # a recalibrated version's score -> probability map

    @classmethod
    def from_dir(cls, path: Path, version: str) -> ServingModel:
        path = Path(path)
        contract = DatasetContract.model_validate_json((path / CONTRACT_FILE).read_text())
        serving = json.loads((path / SERVING_FILE).read_text())
        if serving["features"] != contract.features:
            raise ValueError(f"model {version}: feature list does not match its contract")
        import lightgbm as lgb  # lazily: see lib/training/search.py

        calibrator = None
        if (path / CALIBRATOR_FILE).is_file():
            file = path / CALIBRATOR_FILE
            try:
                calibrator = Calibrator.from_dict(json.loads(file.read_text()))
            except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
                raise ValueError(f"{file} of model {version} is damaged: {err}") from err
        booster = lgb.Booster(model_file=str(path / BOOSTER_FILE))
        return cls(booster, contract, float(serving["threshold"]), version, calibrator)

    def predict_matrix(self, matrix: np.ndarray, threads: int = 1) -> np.ndarray:
        scores = self.booster.predict(matrix, num_threads=threads)
        return scores if self.calibrator is None else self.calibrator.apply(scores)

    def predict_frame(self, frame: pd.DataFrame, chunk_rows: int = 200_000) -> np.ndarray:
        """Predictions for a feature frame, its matrix built ``chunk_rows`` rows at a time
        (a 6M-row test set's whole matrix is 0.9 GB), on ``bulk_threads()`` (each row's
        prediction is its own: the same numbers on any number of threads)."""
        if not len(frame):
            return np.empty(0)
        threads = bulk_threads()
        return np.concatenate([
            self.predict_matrix(features.to_matrix(frame.iloc[i:i + chunk_rows], self.contract),
                                threads)
            for i in range(0, len(frame), chunk_rows)])

    def predict_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        return self.predict_matrix(features.encode(columns, self.contract))

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        names = self.contract.features
        return self.predict_columns({n: [r.get(n) for r in records] for n in names})
