"""Where reports live so a browser can open them: an Evidently workspace served by
`evidently ui` (``mlops-assets ui`` starts it beside the Dagster UI).

Every EDA, evaluation and drift report is a snapshot in the workspace's project for its dataset
(``<dataset>: lifecycle``), tagged with its kind (``eda``, ``evaluation``, ``drift``, ``live``)
and, where it has one, the model version, so the project's dashboard plots drift share, missing
values, test and live ROC AUC and log loss over time. The same report is also written as a
standalone HTML file beside the project's other artifacts. The asset's ``link`` metadata is the
snapshot's page in the Evidently UI over HTTP (``MLOPS_REPORTS_URL``, default
http://127.0.0.1:8000).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.lib import io

DEFAULT_URL = "http://127.0.0.1:8000"
LINKS_FILE = "link_bases.json"  # the base URLs reports' links were made with


def reports_url() -> str:
    return os.environ.get("MLOPS_REPORTS_URL", DEFAULT_URL).rstrip("/")


@dataclass(frozen=True)
class Published:
    path: Path  # the standalone HTML file
    url: str  # the snapshot's page in the Evidently UI
    snapshot_id: str
    project_id: str


# What an empty monitoring panel means, on the panel itself (an empty box looked broken).
NO_TRAFFIC = (" Empty until there is traffic: mlops-assets simulate --months 2 replays later "
              "months through the served champion.")


def _panels(missing_columns: list[str]):
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def metric(name, legend, tags, **labels):
        return PanelMetric(legend=legend, metric=name, tags=tags, metric_labels=labels)

    return [
        ("Monitoring", line_plot_panel(
            "Share of drifted columns per monitoring window",
            [metric("DriftedColumnsCount", "drift share", ["drift"], value_type="share")],
            "Evidently's per-column drift tests on the window's inputs vs the champion's "
            "training reference." + NO_TRAFFIC, size="half")),
        ("Monitoring", line_plot_panel(
            "Live ROC AUC and log loss per window (labelled rows)",
            [metric("RocAuc", "live ROC AUC", ["live"]),
             metric("LogLoss", "live log loss", ["live"])],
            "Delayed labels joined to the logged predictions." + NO_TRAFFIC, size="half")),
        ("Monitoring", line_plot_panel(
            "Calibration per window: mean predicted probability vs observed positive rate",
            [metric("MeanValue", "mean prediction", ["live"],
                    column="predicted_probability"),
             metric("MeanValue", "observed positive rate", ["live"],
                    column="observed_label")],
            "Labelled rows of each window; a gap means the probabilities need recalibrating."
            + NO_TRAFFIC, size="half")),
        ("Models", line_plot_panel(
            "Sealed-test ROC AUC and log loss per model version",
            [metric("RocAuc", "test ROC AUC", ["evaluation"]),
             metric("LogLoss", "test log loss", ["evaluation"])],
            "Each candidate on the sealed test rows", size="half")),
        # Per column: Evidently 0.7's dataset-level "share" is missing cells / rows (it
        # plotted 1.3 for Bank), and a share of each column is what a person can act on.
        ("Data", line_plot_panel(
            "Share of missing values per column in the training data",
            [metric("MissingValueCount", f"{name} missing share", ["eda"], value_type="share",
                    column=name) for name in missing_columns[:8]]
            or [metric("DatasetMissingValueCount", "missing cells", ["eda"],
                       value_type="count")],
            "Per EDA report (dataset build); the contract's missing values (a sentinel such "
            "as pdays = 999 is a value, not missing)", size="half")),
    ]


class ReportStore:
    def __init__(self, root: Path | str, base_url: str | None = None,
                 missing_columns: list[str] | None = None):
        self.root = Path(root)
        self.base_url = (base_url or reports_url()).rstrip("/")
        self.missing_columns = list(missing_columns or [])  # the dashboard's missing panel

    def _project(self, workspace, dataset: str):
        name = f"{dataset}: lifecycle"
        found = workspace.search_project(name)
        if found:
            return found[0]
        project = workspace.create_project(
            name, description=f"Reports of the {dataset} classifier: data, models, monitoring")
        for tab, panel in _panels(self.missing_columns):
            project.dashboard.add_panel(panel, tab=tab)
        return project

    def link_bases(self) -> list[str]:
        """Every base URL a report's link was made with (oldest first): `mlops-assets ui`
        redirects those ports to the one it serves the reports on
        (mlops_assets/platform/redirect.py)."""
        path = self.root / LINKS_FILE
        try:
            bases = io.read_json(path) if path.is_file() else []
        except ValueError:
            return []  # damaged: links made before stay as they are
        return [b for b in bases if isinstance(b, str)]

    def _remember_link_base(self) -> None:  # under the publish lock
        if self.base_url not in (bases := self.link_bases()):
            io.write_json(self.root / LINKS_FILE, [*bases, self.base_url])

    def ensure_workspace(self) -> None:
        """An (empty) workspace folder, so `evidently ui` can start before any report."""
        self.root.mkdir(parents=True, exist_ok=True)

    def publish(self, snapshot, dataset: str, html: Path) -> Published:
        """Write ``snapshot`` as standalone HTML (atomically) and add it to the workspace."""
        from evidently.ui.workspace import Workspace

        io.write_with(html, lambda tmp: snapshot.save_html(str(tmp)))
        self.root.mkdir(parents=True, exist_ok=True)
        # Runs publish at once; the workspace's project index is one file per project, so
        # finding-or-creating a project is done one at a time.
        with open(self.root / ".publish.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            workspace = Workspace(str(self.root))
            project = self._project(workspace, dataset)
            ref = workspace.add_run(project.id, snapshot, include_data=False)
            self._remember_link_base()
        snapshot_id = str(ref.id)
        return Published(Path(html), f"{self.base_url}/projects/{project.id}/reports/"
                         f"{snapshot_id}", snapshot_id, str(project.id))
