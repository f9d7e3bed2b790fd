"""The model registry: versions in the BentoML model store, aliases ("production" is the
champion, "canary" the challenger under test) in one JSON file written atomically under a
lock, with the full history of every alias move."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd

from mlops_assets.config import DatasetContract
from mlops_assets.lib import io
from mlops_assets.lib.model import REFERENCE_FILE, ServingModel, write_model_dir

PRODUCTION = "production"
CANARY = "canary"


class RegistryError(ValueError):
    pass


def _model_store(bentoml_home: Path):
    from bentoml._internal.models.model import ModelStore

    return ModelStore(str(bentoml_home / "models"))


class Registry:
    """Registry rooted at a project home: ``<home>/bentoml`` is BENTOML_HOME."""

    def __init__(self, home: Path | str):
        self.home = Path(home)
        self.bentoml_home = self.home / "bentoml"
        (self.bentoml_home / "models").mkdir(parents=True, exist_ok=True)
        self.store = _model_store(self.bentoml_home)
        self.state_file = self.home / "registry" / "aliases.json"

    # --- versions -----------------------------------------------------------------------

    def save(
        self,
        contract: DatasetContract,
        booster: lgb.Booster,
        threshold: float,
        best_iteration: int,
        metadata: dict[str, Any],
        reference: pd.DataFrame | None = None,
    ) -> str:
        """Save a trained model as a new version. BentoML writes it to a temporary directory
        and moves it into the store only when this block completes, so a failure leaves no
        partial version behind."""
        import bentoml

        with bentoml.models.create(
            f"{contract.name}-classifier",
            labels={"dataset": contract.name, "framework": "lightgbm"},
            metadata=_plain(metadata),
            _model_store=self.store,
        ) as model:
            write_model_dir(Path(model.path), booster, contract, threshold, best_iteration,
                            reference)
        return str(model.tag)

    def get(self, tag: str):
        import bentoml

        try:
            return bentoml.models.get(tag, _model_store=self.store)
        except bentoml.exceptions.NotFound as err:
            raise RegistryError(
                f"model {tag!r} is not in the model store {self.bentoml_home / 'models'}"
            ) from err

    def load(self, tag: str) -> ServingModel:
        model = self.get(tag)
        return ServingModel.from_dir(Path(model.path), str(model.tag))

    def reference(self, tag: str) -> pd.DataFrame:
        """The drift reference saved with a model: training features and predictions."""
        path = Path(self.get(tag).path) / REFERENCE_FILE
        if not path.is_file():
            raise RegistryError(f"model {tag} was saved without a drift reference")
        return pd.read_parquet(path)

    def versions(self) -> list[str]:
        return [str(m.tag) for m in sorted(self.store.list(), key=lambda m: m.creation_time)]

    # --- aliases ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            io.write_json(self.state_file, state)

    def _read(self) -> dict:
        if not self.state_file.is_file():
            return {"aliases": {}, "history": []}
        return io.read_json(self.state_file)

    def aliases(self) -> dict[str, str]:
        return dict(self._read()["aliases"])

    def alias(self, name: str = PRODUCTION) -> str | None:
        return self._read()["aliases"].get(name)

    def champion(self) -> str | None:
        return self.alias(PRODUCTION)

    def history(self, name: str = PRODUCTION) -> list[dict]:
        return [h for h in self._read()["history"] if h["alias"] == name]

    def set_alias(self, name: str, tag: str | None, action: str, reason: str) -> dict:
        """Point ``name`` at ``tag`` (None removes it) and record the move."""
        if tag is not None:
            self.get(tag)
        with self._locked() as state:
            event = {
                "alias": name,
                "tag": tag,
                "previous": state["aliases"].get(name),
                "action": action,
                "reason": reason,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if tag is None:
                state["aliases"].pop(name, None)
            else:
                state["aliases"][name] = tag
            state["history"].append(event)
        return event

    def promote(self, tag: str, reason: str) -> dict:
        return self.set_alias(PRODUCTION, tag, "promote", reason)

    def rollback(self, to: str | None = None, reason: str = "rollback") -> dict:
        """Set the champion back to ``to``, or to the champion before the current one."""
        current = self.champion()
        if to is None:
            previous = [h["previous"] for h in self.history() if h["tag"] == current]
            to = previous[-1] if previous else None
            if to is None:
                raise RegistryError(f"no earlier champion to roll back to (current: {current})")
        if to == current:
            raise RegistryError(f"{to} is already the champion")
        return self.set_alias(PRODUCTION, to, "rollback", reason)


def _plain(obj: Any) -> Any:
    """Metadata as JSON-plain values (BentoML stores it as YAML)."""
    return json.loads(json.dumps(obj, default=str))


def provenance() -> dict[str, Any]:
    """Library versions and the git commit of the code that trained a model."""
    import subprocess
    from importlib.metadata import version

    from mlops_assets.config import PROJECT_ROOT

    libs = ["lightgbm", "numpy", "pandas", "scikit-learn", "optuna", "bentoml", "mlops-assets"]
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"libraries": {name: version(name) for name in libs}, "git_commit": commit}
