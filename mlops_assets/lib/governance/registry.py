"""The model registry: versions in the BentoML model store, aliases ("production" is the
champion, "canary" the challenger under test) in an append-only journal written under a lock,
with the full history of every alias move and an atomic snapshot beside it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_assets.config import DatasetContract
from mlops_assets.lib import io

if TYPE_CHECKING:
    import lightgbm as lgb
from mlops_assets.lib.training.calibration import Calibrator
from mlops_assets.lib.training.model import (
    PREDICTION,
    REFERENCE_FILE,
    ServingModel,
    write_model_dir,
)

log = logging.getLogger(__name__)

PRODUCTION = "production"
CANARY = "canary"
SHADOW = "shadow"  # scores requests beside the champion, never answers


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
        self.journal_file = self.home / "registry" / "aliases.journal.jsonl"

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

    def save_recalibrated(self, base: str, calibrator: Calibrator, threshold: float,
                          metadata: dict[str, Any]) -> str:
        """A new version: ``base``'s booster, contract and drift reference (its predictions
        mapped by the calibrator, so prediction drift compares like with like) with
        ``calibrator`` and a threshold re-derived for it. Its metadata names the base version
        (``recalibrated_from``); it is gated, served, canaried and rolled back like any."""
        import bentoml


        try:
            calibrator.check()  # never store a map that serves probabilities upside down
        except ValueError as err:
            raise RegistryError(f"recalibrating {base}: {err}; recalibration cannot fix "
                                "such a model, retrain it instead") from err
        source = Path(self.get(base).path)
        model = ServingModel.from_dir(source, base)
        if model.calibrator is not None:
            raise RegistryError(f"{base} is already recalibrated (from "
                                f"{self.get(base).info.metadata.get('recalibrated_from')}): "
                                "recalibrate its base version instead")
        reference = None
        if (source / REFERENCE_FILE).is_file():
            reference = pd.read_parquet(source / REFERENCE_FILE)
            if PREDICTION in reference:
                reference[PREDICTION] = calibrator.apply(reference[PREDICTION].to_numpy())
        info = {**metadata, "recalibrated_from": base, "calibration": calibrator.to_dict()}
        with bentoml.models.create(
            f"{model.contract.name}-classifier",
            labels={"dataset": model.contract.name, "framework": "lightgbm",
                    "recalibrated": "true"},
            metadata=_plain(info),
            _model_store=self.store,
        ) as saved:
            write_model_dir(Path(saved.path), model.booster, model.contract, threshold,
                            0, reference, calibrator)  # 0: every tree of the saved booster
        return str(saved.tag)

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

    def overview(self) -> list[dict]:
        """Every version at a glance, newest first (``mlops-assets models``): aliases,
        created, the data it was trained on, its sealed-test AUC and log loss (from its
        evaluation report, where it has one), what it was recalibrated from, and its Bento."""
        from mlops_assets.lib.governance.bento import bento_of

        aliases: dict[str, list[str]] = {}
        for alias, tag in self.aliases().items():
            aliases.setdefault(tag, []).append(alias)
        rows = []
        for model in sorted(self.store.list(), key=lambda m: m.creation_time, reverse=True):
            tag, meta = str(model.tag), model.info.metadata
            evaluated = self.home / "reports" / "evaluation" / tag.replace(":", "-")
            metrics = (io.read_json(evaluated / "evaluation.json").get("metrics", {})
                       if (evaluated / "evaluation.json").is_file() else {})
            batches = list(meta.get("data_versions") or {})
            rows.append({
                "version": tag,
                "aliases": ", ".join(sorted(aliases.get(tag, []))),
                "created": model.creation_time.strftime("%Y-%m-%d %H:%M:%S"),
                "trained_on": (f"{len(batches)} batches {batches[0]}..{batches[-1]}"
                               if batches else ""),
                "dataset_run": (meta.get("dataset_run_id") or "")[:8],
                "test_auc": metrics.get("roc_auc"),
                "test_log_loss": metrics.get("log_loss"),
                "recalibrated_from": meta.get("recalibrated_from") or "",
                "bento": bento_of(self.home, tag) or "",
            })
        return rows

    # --- aliases ------------------------------------------------------------------------
    # The journal (one JSON event per line, appended and fsynced under a lock) is the truth;
    # aliases.json is a snapshot rewritten atomically after each event, for people and
    # tools. A damaged snapshot is never read; a torn journal line (a crash mid-append) is
    # an event that never happened and is skipped.

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        self.journal_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_file.with_name("aliases.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.journal_file.is_file() and self.state_file.is_file():
                for event in self._read_snapshot()["history"]:  # a home from before journals
                    io.append_line(self.journal_file, json.dumps(event, sort_keys=True))
            yield self._read()

    def _read_snapshot(self) -> dict:
        try:
            state = io.read_json(self.state_file)
            return {"aliases": dict(state["aliases"]), "history": list(state["history"])}
        except (ValueError, KeyError, TypeError) as err:
            raise RegistryError(
                f"registry snapshot {self.state_file} is damaged ({err}) and there is no "
                f"journal {self.journal_file.name} to rebuild it from: restore the file from a "
                "backup, or delete it and set the champion again with "
                "`mlops-assets rollback --to <model tag>`"
            ) from err

    def _read(self) -> dict:
        if not self.journal_file.is_file():
            if self.state_file.is_file():
                return self._read_snapshot()
            return {"aliases": {}, "history": []}
        aliases: dict[str, str] = {}
        events = []
        for number, event in self._journal_events():
            if not (isinstance(event, dict) and {"alias", "tag"} <= event.keys()):
                raise RegistryError(
                    f"registry journal {self.journal_file} line {number}: not an alias "
                    f"move ({str(event)[:80]}); restore the file from a backup, or remove "
                    "that line (each line is one move, in order)")
            if "sha" in event and event["sha"] != _checksum(event):
                raise RegistryError(
                    f"registry journal {self.journal_file} line {number}: damaged (its "
                    f"checksum {event['sha']} does not match its content {_checksum(event)}); "
                    "restore the file from a backup, or remove that line")
            if event["tag"] is None:
                aliases.pop(event["alias"], None)
            else:
                aliases[event["alias"]] = event["tag"]
            events.append(event)
        return {"aliases": aliases, "history": events}

    def _journal_events(self) -> Iterator[tuple[int, Any]]:
        """Each line's event with its line number. A line cut short by a crash mid-append
        (an object that never closes) is an event that never completed and is skipped; a line
        damaged anywhere else (bytes changed, not JSON from its first character) is an
        error naming file and line: the aliases it would give cannot be trusted."""
        with open(self.journal_file, "rb") as f:
            for number, raw in enumerate(f, start=1):
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    continue
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as err:
                    # Every event is one object on one line: a line that starts one and
                    # never closes it was cut short; anything else was changed.
                    if text.startswith("{") and not text.endswith("}") \
                            and "\ufffd" not in text:
                        log.warning("%s line %d skipped: cut short (%s); that event never "
                                    "completed", self.journal_file, number, err.msg)
                        continue
                    raise RegistryError(
                        f"registry journal {self.journal_file} line {number}: damaged, not "
                        f"an alias move ({err.msg} at column {err.colno}); restore the file "
                        "from a backup, or remove that line") from err

    def aliases(self) -> dict[str, str]:
        return dict(self._read()["aliases"])

    def alias(self, name: str = PRODUCTION) -> str | None:
        return self._read()["aliases"].get(name)

    def champion(self) -> str | None:
        return self.alias(PRODUCTION)

    def history(self, name: str = PRODUCTION) -> list[dict]:
        return [h for h in self._read()["history"] if h["alias"] == name]

    def set_alias(self, name: str, tag: str | None, action: str, reason: str,
                  expect: str | None | object = ...) -> dict:
        """Point ``name`` at ``tag`` (None removes it) and record the move. With ``expect``,
        refuse unless the alias still points where the caller last saw it (compare and set)."""
        if tag is not None:
            self.get(tag)
        with self._locked() as state:
            current = state["aliases"].get(name)
            if expect is not ... and current != expect:
                raise RegistryError(
                    f"{name} moved from {expect} to {current} while this change was being "
                    f"decided; nothing was changed: run it again against {current}"
                )
            event = {
                "alias": name,
                "tag": tag,
                "previous": current,
                "action": action,
                "reason": reason,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            event["sha"] = _checksum(event)  # a changed byte is found, not served
            io.append_line(self.journal_file, json.dumps(event, sort_keys=True))
            aliases = {**state["aliases"], name: tag}
            io.write_json(self.state_file, {
                "aliases": {k: v for k, v in aliases.items() if v is not None},
                "history": [*state["history"], event],
            })
        return event

    def promote(self, tag: str, reason: str, expect: str | None | object = ...) -> dict:
        return self.set_alias(PRODUCTION, tag, "promote", reason, expect)

    def lineage(self) -> list[str]:
        """The champions in the order they took over, without the ones rolled back from:
        each promotion pushes a version, each rollback pops back to its target."""
        stack: list[str] = []
        for event in self.history(PRODUCTION):
            tag = event["tag"]
            if tag is None:
                stack = []
            elif event["action"] == "rollback" and tag in stack:
                del stack[stack.index(tag) + 1:]
            elif not stack or stack[-1] != tag:
                stack.append(tag)
        return stack

    def rollback(self, to: str | None = None, reason: str = "rollback") -> dict:
        """Set the champion back to ``to``, or one step back along the lineage: rolling back
        twice goes two versions back, never forth to the version rolled back from."""
        current = self.champion()
        if current is None:
            raise RegistryError("there is no champion to roll back from yet: promote one first "
                                "(make demo, or the train_and_promote job)")
        if to is None:
            stack = self.lineage()
            if len(stack) < 2:
                raise RegistryError(
                    f"no earlier champion to roll back to: {current} is the first in the "
                    "promotion history (name one with --to)"
                )
            to = stack[-2]
        if to == current:
            raise RegistryError(f"{to} is already the champion")
        return self.set_alias(PRODUCTION, to, "rollback", reason, expect=current)


def _checksum(event: dict) -> str:
    """A journal line's checksum: of its event without the checksum itself."""
    body = json.dumps({k: v for k, v in event.items() if k != "sha"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


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
