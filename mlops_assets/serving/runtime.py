"""What the service holds: the champion (and the canary and the shadow, if any), swapped in
place when the registry's aliases move."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlops_assets.lib.governance.registry import CANARY, PRODUCTION, SHADOW, Registry
from mlops_assets.lib.training.model import ServingModel

log = logging.getLogger("mlops_assets.serving")


@dataclass(frozen=True)
class Variants:
    """An immutable pair: a request takes one reference and keeps it to the end, so a swap
    never changes a model under a request in flight."""

    champion: ServingModel | None
    canary: ServingModel | None
    shadow: ServingModel | None = None  # scores beside the answering model, never answers


def smoke_test(model: ServingModel) -> None:
    """One prediction on an all-missing row: the model loads and gives a finite probability."""
    row = np.full((1, len(model.contract.features)), np.nan)
    p = model.predict_matrix(row)
    if not (p.shape == (1,) and np.isfinite(p).all() and 0 <= p[0] <= 1):
        raise ValueError(f"model {model.version} failed the smoke prediction: {p}")


class ModelRuntime:
    def __init__(
        self,
        load: Callable[[str], ServingModel],
        aliases: Callable[[], dict[str, str]],
        canary_share: float,
        seed: int | None = None,
        shadow_share: float = 1.0,
    ):
        self._load = load
        self._aliases = aliases
        self.canary_share = canary_share
        self.shadow_share = shadow_share
        self.variants = Variants(None, None)
        self.error: str | None = None
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_registry(cls, registry: Registry, canary_share: float, pinned: str | None = None,
                      shadow_share: float = 1.0):
        if pinned:
            return cls(registry.load, lambda: {PRODUCTION: pinned}, 0.0)
        return cls(registry.load, registry.aliases, canary_share, shadow_share=shadow_share)

    @property
    def ready(self) -> bool:
        return self.variants.champion is not None

    @property
    def not_ready_reason(self) -> str:
        """Why there is no champion to serve, for /readyz and 503 answers."""
        return self.error or "no champion: the registry's production alias is not set"

    def refresh(self) -> bool:
        """Load whatever the aliases point at now; swap only models that loaded and passed the
        smoke prediction. Returns True when something changed."""
        current = self.variants
        try:
            wanted = self._aliases()
        except Exception as err:  # a damaged registry: keep serving what we have; say why
            self.error = f"cannot read the registry: {err}"
            log.error(self.error)
            return False
        new, failed = {}, False
        for alias, slot in ((PRODUCTION, current.champion), (CANARY, current.canary),
                            (SHADOW, current.shadow)):
            tag = wanted.get(alias)
            if tag is None:
                new[alias] = None
            elif slot is not None and slot.version == tag:
                new[alias] = slot
            else:
                try:
                    model = self._load(tag)
                    smoke_test(model)
                    new[alias] = model
                    log.info("loaded %s for %s", tag, alias)
                except Exception as err:  # keep serving what we have; say why
                    self.error = f"cannot load {alias} {tag}: {err}"
                    log.error(self.error)
                    failed = True
                    new[alias] = slot
        self.variants = Variants(new[PRODUCTION], new[CANARY], new[SHADOW])
        if not failed:
            self.error = None
        return self.versions(self.variants) != self.versions(current)

    @staticmethod
    def versions(v: Variants) -> tuple[str | None, ...]:
        return tuple(m and m.version for m in (v.champion, v.canary, v.shadow))

    def choose(self) -> tuple[str, ServingModel, ServingModel | None]:
        """The variant that answers, its model, and the shadow model that scores this
        request too (None: no shadow, or this request is not in its share): one snapshot,
        so a swap in between cannot mix two states."""
        v = self.variants
        shadow = v.shadow if v.shadow is not None and (
            self.shadow_share >= 1 or self._rng.random() < self.shadow_share) else None
        if v.canary is not None and self._rng.random() < self.canary_share:
            return "canary", v.canary, shadow
        return "champion", v.champion, shadow

    def start(self, every_s: float) -> None:
        def loop():
            while not self._stop.wait(every_s):
                try:
                    self.refresh()
                except Exception:
                    log.exception("refresh failed")

        self._thread = threading.Thread(target=loop, name="model-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

