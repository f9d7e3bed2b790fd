"""The README's main command on the bundled data: 12 Bank periods end with a champion; then
the UI as a person uses it, in a real browser (Debian's chromium driven by Playwright):
the lineage (collapsed groups in lifecycle order), a report link that opens over HTTP on
another port than it was made for, the EDA report's summary and category charts, the
reports dashboard's shares, an empty monitoring asset that says how to get traffic, a
materialization launched from the UI, and the demo's runs on their job's page.
Screenshots in the test's tmp dir."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.lib.governance.registry import Registry
from mlops_assets.platform.procs import free_port
from tests.helpers import answers, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"  # installed by `make test` (Makefile: browser)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "mlops-assets"
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster"), **(env or {})}
    return subprocess.run([str(exe), "--home", str(home), *args], capture_output=True,
                          text=True, env=env, cwd=PROJECT_ROOT, timeout=900)


def test_demo_then_the_ui_in_a_browser(tmp_path):
    home = tmp_path / "home"
    port, reports_port = free_port(), free_port()
    reports_url = f"http://127.0.0.1:{reports_port}"
    done = _cli(home, "demo", env={"MLOPS_REPORTS_URL": reports_url})
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "landed 12 of 26 batches" in done.stdout
    assert "ingested 12 batches (0 failed)" in done.stdout
    assert "  candidate_model: ok (" in done.stdout and "trial 20/20" in done.stdout
    assert "STEP_START" not in done.stdout  # progress lines, not Dagster's event stream
    champion = Registry(home).champion()
    assert champion and f"champion: {champion}" in done.stdout
    evaluation = json.loads(
        (home / "reports" / "evaluation" / champion.replace(":", "-") / "evaluation.json")
        .read_text()
    )
    assert evaluation["metrics"]["rows"] > 5000
    assert evaluation["metrics"]["roc_auc"] >= 0.72  # issue acceptance on 12 periods
    assert (home / "reports" / "model_cards" / f"{champion.replace(':', '-')}.md").is_file()
    # One champion only: rolling back has nowhere to go, and says so.
    rollback = _cli(home, "rollback")
    assert rollback.returncode == 1
    # One line, no stack trace.
    assert rollback.stderr.strip().splitlines() == [
        f"rollback failed: rollback_champion: no earlier champion to roll back to: "
        f"{champion} is the first in the promotion history (name one with --to)"]
    assert Registry(home).champion() == champion
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        demo_run = instance.get_runs(dg.RunsFilter(job_name="train_and_promote"))[0]
    assert demo_run.remote_job_origin is not None  # launched through the instance

    # The UI with the reports on another port than the one the demo's links were made
    # with: the links still open (a redirect from the old port).
    exe = Path(sys.executable).parent / "mlops-assets"
    log = tmp_path / "ui.log"
    served_port = free_port()
    with open(log, "w") as out:
        ui = subprocess.Popen(
            [str(exe), "--home", str(home), "ui", "--port", str(port), "--reports-port",
             str(served_port)], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "DAGSTER_HOME": str(home / "dagster")}, start_new_session=True)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/server_info"), 180, 1, "UI")
        wait_until(lambda: answers(f"http://127.0.0.1:{served_port}/api/version"), 60, 1,
                   "reports UI")
        wait_until(lambda: answers(f"{reports_url}/api/version"), 60, 1,
                   "the redirect from the reports' old port")
        _browse(f"http://127.0.0.1:{port}", reports_url, demo_run.run_id, home, tmp_path,
                f"http://127.0.0.1:{served_port}")
    finally:
        os.kill(ui.pid, signal.SIGTERM)
        assert ui.wait(60) == 0, log.read_text()[-3000:]


def _browse(ui: str, reports_url: str, demo_run_id: str, home: Path, shots: Path,
            served_url: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 950})

        def skip_welcome():
            button = page.get_by_role("button", name="Skip")
            if button.count():
                button.first.click()

        def click_through_overlays(target):
            # A dialog of the UI (its welcome, a notice) can open after the page went idle, and
            # its backdrop then takes the click: close it with Escape and click again.
            for attempt in range(4):
                try:
                    target.click(timeout=7_500)
                    return
                except PlaywrightTimeout:
                    if attempt == 3:
                        raise
                    skip_welcome()
                    page.keyboard.press("Escape")
                    backdrop = page.locator(".bp5-overlay-backdrop, .bp4-overlay-backdrop")
                    with contextlib.suppress(PlaywrightTimeout):
                        backdrop.first.wait_for(state="detached", timeout=5_000)

        # The lineage: every stage's group.
        page.goto(f"{ui}/asset-groups", wait_until="networkidle")
        page.wait_for_timeout(2_000)
        assert page.get_by_text("Join the Dagster community").count() == 0  # nux: off
        skip_welcome()
        for group in ("ingestion", "validation", "labels", "dataset", "features", "training",
                      "evaluation", "governance", "deployment", "monitoring"):
            page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "lineage.png"))
        # Collapsed, the groups read in lifecycle order, left to right (no group-level cycle):
        # each group's node is the rightmost element with its name (the others are the list).
        x = {g: max(b["x"] for b in (e.bounding_box() for e in
                                     page.get_by_text(g, exact=True).all()) if b)
             for g in ("ingestion", "validation", "labels", "dataset", "features", "training",
                       "evaluation", "governance", "deployment", "monitoring")}
        order = ["ingestion", "validation", "dataset", "features", "training", "evaluation",
                 "governance", "deployment", "monitoring"]
        assert [x[g] for g in order] == sorted(x[g] for g in order), x
        assert x["labels"] < x["dataset"], x

        # A monitoring asset with nothing yet says how to get traffic.
        page.goto(f"{ui}/assets/drift_report", wait_until="networkidle")
        skip_welcome()
        page.get_by_text("mlops-assets simulate").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "drift_report_empty.png"))

        # The evaluation report opens with one click, over HTTP, and shows its ROC AUC, its
        # link made for the reports' old port.
        page.goto(f"{ui}/assets/model_evaluation", wait_until="networkidle")
        skip_welcome()
        link = page.locator(f'a[href^="{reports_url}/projects/"]').first
        link.wait_for(timeout=30_000)
        with page.context.expect_page() as opened:
            click_through_overlays(link)
        report = opened.value
        report.wait_for_load_state("networkidle")
        assert report.url.startswith(served_url), report.url  # followed to today's port
        report.get_by_text("ROC AUC", exact=True).first.wait_for(timeout=30_000)
        report.screenshot(path=str(shots / "evaluation_report.png"))
        report.close()

        # The EDA report (same redirect): the two-valued category columns, whose charts were
        # empty boxes, draw their bars, and list no category "nan" or "None".
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            eda = instance.get_latest_materialization_event(dg.AssetKey("eda_report"))
        page.goto(eda.asset_materialization.metadata["link"].value, wait_until="networkidle")
        assert page.url.startswith(served_url), page.url
        # Its summary table names no column the rows lack ("target column None" was there).
        page.get_by_text("number of rows", exact=True).first.wait_for(timeout=30_000)
        for role in ("id column", "target column", "prediction column", "date column"):
            assert page.get_by_text(role, exact=True).count() == 0, role
        for column in ("default", "housing", "loan"):
            card = page.get_by_text(column, exact=True).first.locator(
                "xpath=ancestor::div[contains(@class,'MuiPaper')][1]")
            card.wait_for(timeout=30_000)
            card.scroll_into_view_if_needed()
            assert card.locator(".bars path").count() >= 2, column  # "no" and "yes"
            for phantom in ("nan", "None"):  # a missing value is the "missing" row only
                assert card.get_by_text(phantom, exact=True).count() == 0, (column, phantom)
            card.screenshot(path=str(shots / f"eda_{column}.png"))

        # The reports dashboard: every share it plots lies in [0, 1] (the data series the
        # browser received), and the empty monitoring panels say how to fill them.
        series = []

        def keep(response):
            if "/data_series_batch" in response.url:
                series.append(response)

        page.on("response", keep)
        page.goto(eda.asset_materialization.metadata["link"].value.split("/reports/")[0],
                  wait_until="networkidle")
        page.get_by_text("Share of missing values per column").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1_000)
        page.remove_listener("response", keep)
        shares = [v for r in series for s in r.json()["series"]
                  if s["params"].get("value_type") == "share" for v in s["values"]]
        assert shares and all(0 <= v <= 1 for v in shares), shares
        assert page.get_by_text("Empty until there is traffic").count() == 3
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

        # The champion's history fits its metadata table: the last column ("reason") ends
        # left of the page's Definition panel instead of being cut off.
        page.goto(f"{ui}/assets/champion", wait_until="networkidle")
        skip_welcome()
        reason = page.get_by_text("reason", exact=True).first
        reason.wait_for(timeout=30_000)
        panel = page.get_by_text("Definition", exact=True).first.bounding_box()
        box = reason.bounding_box()
        assert box["x"] + box["width"] <= panel["x"], (box, panel)
        page.screenshot(path=str(shots / "champion.png"))

        # The demo's run is on its job's page.
        page.goto(f"{ui}/locations/mlops_assets/jobs/train_and_promote/runs",
                  wait_until="networkidle")
        skip_welcome()
        page.get_by_text(demo_run_id[:8]).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "train_and_promote_runs.png"))

        # A materialization launched from the UI succeeds (the daemon of `dagster dev`).
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            before = {r.run_id for r in instance.get_runs()}
            page.goto(f"{ui}/assets/model_card", wait_until="networkidle")
            skip_welcome()
            click_through_overlays(
                page.locator("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).first)

            def finished():
                runs = [r for r in instance.get_runs(limit=5)
                        if r.asset_selection
                        and dg.AssetKey("model_card") in r.asset_selection
                        and r.run_id not in before]
                return runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS,
                                                   dg.DagsterRunStatus.FAILURE) and runs[0]

            run = wait_until(finished, 180, 1, "the UI's materialization")
            time.sleep(1)
            page.screenshot(path=str(shots / "materialized_from_ui.png"))
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
        browser.close()
