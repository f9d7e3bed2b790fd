"""Alerts that reach people (#30), against real receivers: an HTTP server taking the webhook's
JSON and an SMTP server (aiosmtpd), both on 127.0.0.1, with a real `dagster-daemon` running
the sensors. A landed bad batch and a failed run each give exactly one alert naming what
failed and why; with the webhook down, runs go on and the alert arrives once it is back."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets import orchestration
from mlops_assets.config import Paths, load_contract
from mlops_assets.lib.dataset import data
from mlops_assets.platform.procs import free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BANK = load_contract("bank")


class Webhook:
    """A JSON-taking HTTP receiver that can go down and come back on the same port."""

    def __init__(self, port: int):
        self.port, self.received, self.server = port, [], None

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self, port: int):
        from aiosmtpd.controller import Controller

        self.messages: list[str] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append(envelope.content.decode("utf-8", "replace"))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)


def _titles(received: list[dict]) -> list[str]:
    return [r["title"] for r in received]


def test_one_alert_per_failure_to_webhook_and_mail_and_none_lost_while_a_sink_is_down(
        tmp_path, monkeypatch, bank_batches):
    home = tmp_path / "home"
    webhook, mailbox = Webhook(free_port()), Mailbox(free_port())
    for name, value in {
        "MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
        "MLOPS_CONTRACT": "bank", "MLOPS_UI_URL": "http://127.0.0.1:3999",
        # The landing sensor ticks every 2 s (30 s by default), as the replay's does.
        "MLOPS_SENSOR_INTERVAL": "2",
        "MLOPS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{webhook.port}/hook",
        "MLOPS_ALERT_SMTP_URL": f"smtp://127.0.0.1:{mailbox.controller.port}",
        "MLOPS_ALERT_EMAIL_TO": "ops@example.com",
    }.items():
        monkeypatch.setenv(name, value)
    orchestration.ensure_dagster_home(home / "dagster")
    paths = Paths(home)
    webhook.start()
    mailbox.controller.start()
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        with orchestration.Launcher(instance, echo=lambda _: None, daemon=True) as launcher:
            # The alert sensor has ticked once the sinks' outboxes exist.
            wait_until(lambda: (home / "alerts" / "outbox" / "email.json").is_file(), 90,
                       what="the alert sensor's first tick")
            # 1. A landed bad batch (30% unseen job): one alert, the check's reason.
            bad = bank_batches["2008-06"].copy()
            bad.loc[bad.index[: int(len(bad) * 0.3)], "job"] = "astronaut"
            started = time.monotonic()
            data.write_batch(bad, paths.landing, "2008-06", BANK.source.separator)
            wait_until(lambda: webhook.received, 120, what="the bad batch's alert")
            within = time.monotonic() - started
            print(f"the bad batch's alert arrived {within:.1f} s after the landing")
            alert = webhook.received[0]
            assert alert["title"] == ("check invalid_fraction_below_limit on validated_batch "
                                      "(partition 2008-06) failed (blocking)"), alert
            assert "invalid" in alert["reason"] and "limit" in alert["reason"], alert
            assert alert["link"].startswith("http://127.0.0.1:3999/runs/")
            assert alert["text"].startswith(alert["title"])  # a Slack-valid body
            wait_until(lambda: mailbox.messages, 30, what="the bad batch's e-mail")
            assert "Subject: [mlops-assets] check invalid_fraction_below_limit" in \
                mailbox.messages[0]
            # 2. A failed run (a rollback with nothing to roll back): one alert, its step.
            assert not launcher.run("rollback").success
            wait_until(lambda: len(webhook.received) >= 2, 60, what="the failed run's alert")
            run_alert = webhook.received[1]
            assert run_alert["title"].endswith("of rollback failed"), run_alert
            assert "step rollback_champion failed" in run_alert["reason"], run_alert
            # 3. The webhook down: a run still succeeds, an alert waits, then arrives.
            webhook.stop()
            good = bank_batches["2008-07"]
            data.write_batch(good, paths.landing, "2008-07", BANK.source.separator)
            assert not launcher.run("set_canary", run_config={"ops": {"set_canary_alias": {
                "config": {"tag": "no-such-model:v1"}}}}).success
            wait_until(lambda: len(mailbox.messages) >= 3, 60, what="the canary run's e-mail")
            waiting = json.loads((home / "alerts" / "outbox" / "webhook.json").read_text())
            assert [w["alert"]["title"].endswith("of set_canary failed") for w in waiting] \
                == [True]
            wait_until(lambda: instance.get_runs(dg.RunsFilter(
                job_name="ingest_batch", statuses=[dg.DagsterRunStatus.SUCCESS])), 90,
                what="the good batch ingested while the webhook was down")
            webhook.start()
            wait_until(lambda: len(webhook.received) >= 3, 90, what="the waiting alert")
            time.sleep(12)  # two more ticks of both sensors: nothing is sent twice
        titles = _titles(webhook.received)
        assert len(titles) == 3 and titles[2].endswith("of set_canary failed"), titles
        assert len(mailbox.messages) == 3, [m.splitlines()[:3] for m in mailbox.messages]
    finally:
        mailbox.controller.stop()
        instance.dispose()


def test_a_sink_that_is_down_is_retried_with_backoff_in_order(tmp_path):
    """lib/alerts in isolation: a failing sink keeps the alerts in order and backs off."""
    from mlops_assets.lib.monitoring import alerts

    class Flaky:
        name = "flaky"
        up = False
        got: list[str] = []

        def send(self, alert):
            if not self.up:
                raise OSError("connection refused")
            self.got.append(alert.title)

    sink, outbox = Flaky(), alerts.Outbox(tmp_path)
    first = [alerts.Alert("a", f"alert {i}", "why", "link") for i in range(3)]
    assert outbox.deliver(sink, first, now=0) == (0, 3)
    assert outbox.pending(sink)[0]["next"] == alerts.FIRST_RETRY_S
    assert outbox.deliver(sink, [], now=5) == (0, 3)  # not due yet: not tried
    assert outbox.pending(sink)[0]["tries"] == 1
    assert outbox.deliver(sink, [], now=10) == (0, 3)  # tried again, backs off further
    assert outbox.pending(sink)[0]["next"] == 10 + 2 * alerts.FIRST_RETRY_S
    sink.up = True
    assert outbox.deliver(sink, [alerts.Alert("b", "alert 3", "why", "link")], now=31) == \
        (4, 0)
    assert sink.got == ["alert 0", "alert 1", "alert 2", "alert 3"]
    send, held = alerts.rate_limited(first, {}, 900, now=0)
    assert [a.title for a in send] == ["alert 0"] and len(held) == 2  # one per cause


def test_no_sink_means_nothing_sent_and_the_tick_says_so(tmp_path, monkeypatch):
    from mlops_assets.defs.operations import alerts as alert_defs
    from mlops_assets.defs.resources import ProjectResource
    from mlops_assets.lib.monitoring import alerts

    for name in ("MLOPS_ALERT_WEBHOOK_URL", "MLOPS_ALERT_SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    project = ProjectResource(home=str(tmp_path), contract_name="bank",
                              reports_url="http://127.0.0.1:8000")
    said = alert_defs._send([alerts.Alert("x", "check y failed", "why", "link")], project)
    assert said.startswith("no alert sink set") and "1 alert(s) not sent" in said
    assert not (Path(tmp_path) / "alerts").exists()


def test_a_misconfigured_sink_is_named_and_the_others_still_alert(tmp_path, monkeypatch):
    from mlops_assets.lib.monitoring import alerts

    sinks, problems = alerts.sinks_from_env({
        "MLOPS_ALERT_WEBHOOK_URL": "ftp://example/hook",
        "MLOPS_ALERT_SMTP_URL": "smtp://127.0.0.1:2525", "MLOPS_ALERT_EMAIL_TO": ""})
    assert sinks == []
    assert problems == [
        "MLOPS_ALERT_WEBHOOK_URL='ftp://example/hook': write http(s)://host[:port]/path",
        "MLOPS_ALERT_SMTP_URL is set but MLOPS_ALERT_EMAIL_TO is empty"]
    sinks, problems = alerts.sinks_from_env({
        "MLOPS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "MLOPS_ALERT_SMTP_URL": "mail.example.com", "MLOPS_ALERT_EMAIL_TO": "a@b"})
    assert [s.name for s in sinks] == ["webhook"]
    assert problems[0].startswith("MLOPS_ALERT_SMTP_URL='mail.example.com': write smtp://")
