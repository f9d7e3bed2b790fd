"""Training on a Dask cluster with ``lightgbm.dask`` when the training set is large.

The hyperparameter search stays local and seeded (Optuna over early-stopped fits, as for
a small training set) on a deterministic sample of the training rows; the chosen parameters
and round count are then fitted on every training row by LightGBM's own data-parallel
learner across the cluster's workers. ``lightgbm.dask`` does not support early stopping
(each worker would judge its own share of the validation rows and stop at a different
round), so the round count comes from the search. The result is a plain ``lgb.Booster``
(``to_local()``), the same kind of object a local fit gives, so the registry, the Bento and
the service do not change.

The cluster is a ``LocalCluster`` of worker processes on 127.0.0.1 (tests, one machine) or a
running scheduler's address. It is separate from the production profile's step executor:
a step running on a single-threaded executor worker that waited for LightGBM tasks on the
same workers would wait for itself.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import lightgbm as lgb
    from distributed import Client

    from mlops_assets.lib.dataset.rows import FeatureRows


@dataclass(frozen=True)
class ClusterSpec:
    """Where distributed fits run: ``address`` of a running Dask scheduler, or None for a
    LocalCluster of ``local_workers`` single-threaded worker processes started for the fit
    and stopped after it."""

    address: str | None = None
    local_workers: int = 2
    start_timeout_s: float = 120.0

    def describe(self) -> str:
        return self.address or f"LocalCluster of {self.local_workers} worker processes"


@contextmanager
def client_for(spec: ClusterSpec) -> Iterator[Client]:
    """A connected client, waiting (bounded) until at least one worker is up."""
    from distributed import Client, LocalCluster

    if spec.address:
        with Client(spec.address, timeout=spec.start_timeout_s) as client:
            client.wait_for_workers(1, timeout=spec.start_timeout_s)
            yield client
        return
    with LocalCluster(n_workers=spec.local_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster, timeout=spec.start_timeout_s) as client:
        client.wait_for_workers(spec.local_workers, timeout=spec.start_timeout_s)
        yield client


def fit_on(spec: ClusterSpec, x: np.ndarray | FeatureRows, y: np.ndarray | None, params: dict,
           rounds: int, feature_names: list[str], categorical: list[int]
           ) -> tuple[lgb.Booster, int]:
    """``fit`` on the cluster of ``spec``, joined or started for it: the booster and the
    number of workers it ran on. It runs in a fresh context: in a step of the production
    profile, which runs on a Dask worker, distributed's client would take that worker for
    its own (``Client.scatter`` and ``gather`` look up the worker of the running task) and
    tell the wrong scheduler where the rows are. ``x`` may be the training rows' file
    (``rows.FeatureRows``, ``y`` None): each worker then reads its own share of it."""

    def run() -> tuple[lgb.Booster, int]:
        with client_for(spec) as client:
            workers = len(client.scheduler_info(n_workers=-1)["workers"])
            if y is None:
                return fit_rows(client, x, params, rounds, feature_names, categorical), workers
            return fit(client, x, y, params, rounds, feature_names, categorical), workers

    return contextvars.Context().run(run)


def _share(rows: FeatureRows, index: int, parts: int, seed: int) -> tuple[np.ndarray, ...]:
    """Worker ``index`` of ``parts``: its rows of the file, read a chunk at a time, each row
    dealt to a worker at random (seeded by the row's chunk, so the same rows every time)."""
    from mlops_assets.config import TARGET
    from mlops_assets.lib.dataset.features import to_matrix

    xs, ys, start = [], [], 0
    for chunk in rows.chunks():
        mine = np.random.default_rng([seed, start]).integers(0, parts, len(chunk)) == index
        xs.append(to_matrix(chunk[mine], rows.contract))
        ys.append(chunk[TARGET].to_numpy(np.float32)[mine])
        start += len(chunk)
    return np.concatenate(xs), np.concatenate(ys)


def fit_rows(client: Client, rows: FeatureRows, params: dict, rounds: int,
             feature_names: list[str], categorical: list[int]) -> lgb.Booster:
    """``fit`` with each worker reading its random share of the training rows' file itself:
    the step never holds the matrix (the workers must see the file's path)."""
    import operator

    import dask.array as da

    workers = _workers(client)
    seed = params.get("seed", 0)
    shares = [client.submit(_share, rows, i, len(workers), seed, workers=[w], pure=False)
              for i, w in enumerate(workers)]
    sizes = client.gather([client.submit(lambda s: len(s[1]), f, workers=[w])
                           for f, w in zip(shares, workers, strict=True)])
    k = len(rows.contract.features)
    x_parts, y_parts = [], []
    for share, w, n in zip(shares, workers, sizes, strict=True):
        xf = client.submit(operator.getitem, share, 0, workers=[w])
        yf = client.submit(operator.getitem, share, 1, workers=[w])
        x_parts.append(da.from_delayed(xf, shape=(n, k), dtype=np.float64))
        y_parts.append(da.from_delayed(yf, shape=(n,), dtype=np.float32))
    return _fit_arrays(client, da.concatenate(x_parts), da.concatenate(y_parts), params, rounds,
                       feature_names, categorical)


def _workers(client: Client) -> list[str]:
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise RuntimeError("the Dask cluster has no workers to train on")
    return workers


def _fit_arrays(client: Client, x, y, params: dict, rounds: int, feature_names: list[str],
                categorical: list[int]) -> lgb.Booster:
    from lightgbm.dask import DaskLGBMClassifier

    # No eval set, so no metric; lightgbm.dask sets each worker's threads itself.
    local = {k: v for k, v in params.items() if k not in ("metric", "num_threads")}
    model = DaskLGBMClassifier(client=client, n_estimators=rounds, **local)
    model.fit(x, y, feature_name=feature_names, categorical_feature=categorical)
    return model.to_local().booster_


def fit(client: Client, x: np.ndarray, y: np.ndarray, params: dict, rounds: int,
        feature_names: list[str], categorical: list[int]) -> lgb.Booster:
    """``rounds`` boosting rounds of ``params`` on the cluster's workers; the booster, brought
    back local. Each worker holds a seeded random share of the rows (scattered once), not a
    contiguous one: LightGBM's data-parallel learner takes each feature's bin boundaries from
    one worker's rows, and a time-ordered table would give that worker only some periods'
    values (Bank's economic indicators change by month)."""
    import dask.array as da

    workers = _workers(client)
    order = np.random.default_rng(params.get("seed", 0)).permutation(len(y))
    shares = [np.sort(s) for s in np.array_split(order, len(workers)) if len(s)]
    x_parts, y_parts = [], []
    for worker, rows in zip(workers, shares, strict=False):
        xf, yf = client.scatter([x[rows], y[rows]], workers=[worker], direct=True)
        x_parts.append(da.from_delayed(xf, shape=(len(rows), x.shape[1]), dtype=x.dtype))
        y_parts.append(da.from_delayed(yf, shape=(len(rows),), dtype=y.dtype))
    return _fit_arrays(client, da.concatenate(x_parts), da.concatenate(y_parts), params,
                       rounds, feature_names, categorical)
