"""Alerts that reach people: one notification per failure, to a webhook and/or e-mail.

Open-source Dagster has no alert policies, so the project brings its own: the sensors in
``defs/operations/alerts.py`` turn failed runs and failed checks into ``Alert``s, and this
module sends them. Sinks are set by environment:

- MLOPS_ALERT_WEBHOOK_URL: POST each alert as JSON; its ``text`` field makes the body a
  valid Slack incoming-webhook message.
- MLOPS_ALERT_SMTP_URL: ``smtp://[user:password@]host[:port]`` (``smtps://`` for TLS,
  ``?starttls=1`` to upgrade); MLOPS_ALERT_EMAIL_TO: comma-separated recipients;
  MLOPS_ALERT_EMAIL_FROM: the sender (default ``mlops-assets@<hostname>``).
- MLOPS_UI_URL: the Dagster UI the alerts link to (default http://127.0.0.1:3000).

A sink that is down never fails anything: the alert waits in an outbox file (one per sink,
written atomically) and is sent again with exponential backoff (10 s doubling to 10 min) at
each later delivery, in order; every attempt is logged.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

from mlops_assets.lib import io

logger = logging.getLogger("mlops_assets.alerts")
FIRST_RETRY_S = 10.0
MAX_RETRY_S = 600.0


def ui_url() -> str:
    return os.environ.get("MLOPS_UI_URL", "http://127.0.0.1:3000").rstrip("/")


@dataclass(frozen=True)
class Alert:
    cause: str  # what failed, stable across repeats (rate limits count per cause)
    title: str  # one line: what failed
    reason: str  # why: the check's or the step's own words
    link: str  # the run or the asset in the Dagster UI

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.reason}\n{self.link}"

    def body(self) -> dict:
        return {"text": self.text, **asdict(self)}


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, timeout: float = 10.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"MLOPS_ALERT_WEBHOOK_URL={url!r}: write http(s)://host[:port]/path")
        self.url, self.timeout = url, timeout

    def send(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(alert.body()).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            if not 200 <= answer.status < 300:
                raise OSError(f"webhook answered {answer.status}")


class EmailSink:
    name = "email"

    def __init__(self, smtp_url: str, to: list[str], sender: str | None = None,
                 timeout: float = 10.0):
        parsed = urllib.parse.urlsplit(smtp_url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError(f"MLOPS_ALERT_SMTP_URL={smtp_url!r}: write smtp://host:port "
                             "(or smtps://, with user:password@ if the server asks)")
        if not to:
            raise ValueError("MLOPS_ALERT_SMTP_URL is set but MLOPS_ALERT_EMAIL_TO is empty")
        self.parsed, self.to, self.timeout = parsed, to, timeout
        self.sender = sender or f"mlops-assets@{socket.gethostname()}"
        self.starttls = "starttls=1" in (parsed.query or "")

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = f"[mlops-assets] {alert.title}"
        message["From"], message["To"] = self.sender, ", ".join(self.to)
        message.set_content(alert.text + "\n")
        p = self.parsed
        smtp = smtplib.SMTP_SSL if p.scheme == "smtps" else smtplib.SMTP
        with smtp(p.hostname, p.port or (465 if p.scheme == "smtps" else 25),
                  timeout=self.timeout) as server:
            if self.starttls:
                server.starttls()
            if p.username:
                server.login(urllib.parse.unquote(p.username),
                             urllib.parse.unquote(p.password or ""))
            server.send_message(message)


def sinks_from_env(env: dict | None = None) -> tuple[list, list[str]]:
    """The sinks the environment sets (none: alerts are counted, not sent), and what is wrong
    with the settings of those it cannot use (each named with its variable and value; the
    other sinks still get the alerts)."""
    env = os.environ if env is None else env
    sinks: list = []
    problems: list[str] = []
    builders = {
        "MLOPS_ALERT_WEBHOOK_URL": lambda: WebhookSink(env["MLOPS_ALERT_WEBHOOK_URL"]),
        "MLOPS_ALERT_SMTP_URL": lambda: EmailSink(
            env["MLOPS_ALERT_SMTP_URL"],
            [a.strip() for a in env.get("MLOPS_ALERT_EMAIL_TO", "").split(",") if a.strip()],
            env.get("MLOPS_ALERT_EMAIL_FROM")),
    }
    for variable, build in builders.items():
        if env.get(variable):
            try:
                sinks.append(build())
            except ValueError as err:
                problems.append(str(err))
    return sinks, problems


class Outbox:
    """Each sink's alerts not yet delivered, oldest first, with when to try next."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _file(self, sink) -> Path:
        return self.folder / f"{sink.name}.json"

    def pending(self, sink) -> list[dict]:
        path = self._file(sink)
        return io.read_json(path) if path.is_file() else []

    def _save(self, sink, entries: list[dict]) -> None:
        io.write_json(self._file(sink), entries)

    def deliver(self, sink, new: list[Alert], now: float | None = None) -> tuple[int, int]:
        """Send what is due for ``sink`` (the waiting alerts first, then ``new``), in order;
        stop at the first failure and keep the rest for later. (sent, waiting)."""
        now = time.time() if now is None else now
        entries = self.pending(sink) + [{"alert": a.body(), "tries": 0, "next": 0.0}
                                        for a in new]
        sent = 0
        while entries:
            entry = entries[0]
            if entry["next"] > now:
                break
            alert = Alert(**{k: entry["alert"][k] for k in ("cause", "title", "reason",
                                                             "link")})
            try:
                sink.send(alert)
            except (OSError, smtplib.SMTPException, ValueError) as err:
                entry["tries"] += 1
                wait = min(FIRST_RETRY_S * 2 ** (entry["tries"] - 1), MAX_RETRY_S)
                entry["next"] = now + wait
                logger.warning("alert %r not delivered to %s (try %d: %s); next try in %.0f s",
                               alert.title, sink.name, entry["tries"], err, wait)
                break
            logger.info("alert %r delivered to %s", alert.title, sink.name)
            entries.pop(0)
            sent += 1
        self._save(sink, entries)
        return sent, len(entries)


def rate_limited(alerts: list[Alert], last_sent: dict[str, float], min_interval_s: float,
                 now: float | None = None) -> tuple[list[Alert], list[Alert]]:
    """(to send, held back): at most one alert per cause per ``min_interval_s``;
    ``last_sent`` (cause -> time) is updated in place."""
    now = time.time() if now is None else now
    send, held = [], []
    for alert in alerts:
        if now - last_sent.get(alert.cause, float("-inf")) < min_interval_s:
            held.append(alert)
            continue
        last_sent[alert.cause] = now
        send.append(alert)
    return send, held
