"""Alert channels: Discord / Slack / generic JSON webhooks (urllib) and email (smtplib + STARTTLS); each sends
alert messages (``send``) and daily summaries (``send_summary``).

Secrets (webhook URLs, SMTP passwords) are read from the environment variables the config names
and are never put into a message, exception, record or log: failures are described by a short
reason (``HTTP 500``, ``ConnectionRefusedError``) that is additionally scrubbed of every secret.
"""
from __future__ import annotations

import os
import urllib.parse

# urllib.request, smtplib, ssl and email load only when a channel that needs them is configured:
# together they cost tens of milliseconds of start-up, paid by every instrumented process.

from autoperf.alerts.rules import SEVERITIES

_COLORS = {"CRITICAL": 0xE02424, "ERROR": 0xE02424, "WARNING": 0xF59E0B, "INFO": 0x3B82F6}


class DeliveryError(Exception):
    """A failed delivery. ``reason`` is short and secret-free; ``retryable`` says whether to try again."""

    def __init__(self, reason: str, retryable: bool = True):
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


def scrub(text: str, secrets) -> str:
    """``text`` with every secret (and its URL-quoted form) replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***").replace(urllib.parse.quote(s, safe=""), "***")
    return text


def format_text(alert: dict) -> str:
    """One-paragraph human text of an alert message (no secrets: built from the alert dict only); an alert
    that carries its own ``text`` (the daily regressions) is that text."""
    if alert.get("text"):
        return alert["text"]
    what = alert.get("key") or alert.get("flow_name") or alert.get("name") or ""
    field = alert.get("field", "")
    unit = " ms" if field.endswith("_ms") else ("%" if field.endswith("_pct") else "")
    head = f"[{alert['severity']}] {alert['rule']}"
    if what:
        head += f" {what}"
    line = f"{head}: {field} = {alert['value']:g}{unit} > {alert['threshold']:g}{unit}"
    if alert.get("baseline") is not None:
        line += f" (baseline median {alert['baseline']:g}{unit})"
    n = alert.get("count", 1)
    line += f" — {n} occurrence{'s' if n != 1 else ''}"
    if alert.get("max_value") is not None and n > 1:
        line += f", worst {alert['max_value']:g}{unit}"
    if alert.get("description"):
        line += f". {alert['description']}"
    if alert.get("service"):
        line = f"{alert['service']}: {line}"
    return line


class Channel:
    """Base: a named destination with a severity floor and an optional rule filter."""

    kind = "?"

    def __init__(self, spec: dict):
        self.name = spec.get("name") or self.kind
        self.min_severity = SEVERITIES.get(str(spec.get("min_severity") or "WARNING").upper(), 30)
        self.rules = set(spec.get("rules") or [])
        self.timeout = float(spec.get("timeout_s") or 5.0)
        self.problem = None           # why the channel cannot work (missing env var…), or None

    def wants(self, alert: dict) -> bool:
        if self.problem:
            return False
        if SEVERITIES.get(alert["severity"], 30) < self.min_severity:
            return False
        return not self.rules or alert["rule"] in self.rules

    def secrets(self) -> list[str]:
        return []

    def send(self, alert: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


def _env_secret(spec: dict, key: str, channel) -> str:
    var = spec.get(key)
    value = os.environ.get(var, "") if var else ""
    if not value:
        channel.problem = (f"environment variable {var} is not set" if var else f"`{key}` is not configured")
    return value


class WebhookChannel(Channel):
    """Generic JSON webhook: POSTs the alert dict as JSON."""

    kind = "webhook"

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._url = _env_secret(spec, "url_env", self)
        import urllib.request
        self._opener = urllib.request.build_opener()

    def secrets(self):
        return [self._url]

    def payload(self, alert: dict) -> dict:
        return dict(alert, text=format_text(alert))

    def summary_payload(self, summary: dict) -> dict:
        return summary["payload"]

    def send(self, alert: dict) -> None:
        self._post(self.payload(alert))

    def send_summary(self, summary: dict) -> None:
        """A daily summary (alerts/daily.py): ``{subject, text, html, payload}``."""
        self._post(self.summary_payload(summary))

    def _post(self, payload: dict) -> None:
        import urllib.error
        import urllib.request

        import json
        import socket

        body = json.dumps(payload, default=str).encode()
        req = urllib.request.Request(self._url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "autoperf-alerts"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            code = exc.code
            try:
                exc.close()
            except Exception:  # noqa: BLE001
                pass
            raise DeliveryError(f"HTTP {code}", retryable=code >= 500 or code in (408, 429)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            name = type(reason).__name__ if isinstance(reason, BaseException) else "URLError"
            raise DeliveryError(name, retryable=True) from None
        except (OSError, socket.timeout, ValueError) as exc:
            raise DeliveryError(type(exc).__name__, retryable=not isinstance(exc, ValueError)) from None


class DiscordChannel(WebhookChannel):
    kind = "discord"

    def payload(self, alert: dict) -> dict:
        text = format_text(alert)
        return {
            "username": "autoperf",
            "content": text[:1900],
            "allowed_mentions": {"parse": []},
            "embeds": [{"title": f"{alert['severity']} {alert['rule']}"[:256],
                        "description": text[:4000], "color": _COLORS.get(alert["severity"], 0x6B7280)}],
        }


    def summary_payload(self, summary: dict) -> dict:
        return {"username": "autoperf", "allowed_mentions": {"parse": []},
                "content": f"**{summary['subject']}**\n```\n{summary['text'][:1800]}\n```"}


class SlackChannel(WebhookChannel):
    kind = "slack"

    def payload(self, alert: dict) -> dict:
        return {"text": format_text(alert)}

    def summary_payload(self, summary: dict) -> dict:
        return {"text": f"*{summary['subject']}*\n```{summary['text']}```"}


class EmailChannel(Channel):
    """SMTP with STARTTLS (default) or implicit TLS; login when `username` + `password_env` are set."""

    kind = "email"

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.host = spec.get("host") or "localhost"
        self.port = int(spec.get("port") or 587)
        self.starttls = bool(spec.get("starttls", True))
        self.ssl = bool(spec.get("ssl", False))
        self.username = spec.get("username") or None
        self.sender = spec.get("from") or "autoperf@localhost"
        self.to = list(spec.get("to") or [])
        self.ca_file = spec.get("ca_file") or None
        self.verify = bool(spec.get("verify_tls", True))
        self._password = ""
        if spec.get("password_env"):
            self._password = _env_secret(spec, "password_env", self)
        if not self.to:
            self.problem = "no `to` address"

    def secrets(self):
        return [self._password]

    def _context(self):
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _message(self, subject: str, text: str):
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["Subject"] = subject[:200]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg.set_content(text)
        return msg

    def send(self, alert: dict) -> None:
        import json

        subject = f"[autoperf {alert['severity']}] {alert['rule']} {alert.get('key') or ''}".strip()
        self._deliver(self._message(subject, format_text(alert) + "\n\n" + json.dumps(alert, indent=2, default=str)))

    def send_summary(self, summary: dict) -> None:
        """The summary as text, the full HTML report attached."""
        msg = self._message(summary["subject"], summary["text"])
        if summary.get("html"):
            msg.add_attachment(summary["html"], subtype="html", filename=summary.get("filename") or "report.html")
        self._deliver(msg)

    def _deliver(self, msg) -> None:
        import smtplib
        import ssl

        try:
            if self.ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                smtp.ehlo()
                if self.starttls and not self.ssl:
                    smtp.starttls(context=self._context())
                    smtp.ehlo()
                if self.username and self._password:
                    smtp.login(self.username, self._password)
                smtp.send_message(msg)
            finally:
                try:
                    smtp.quit()
                except Exception:  # noqa: BLE001
                    smtp.close()
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            raise DeliveryError(f"SMTP {code}", retryable=400 <= code < 500) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP recipients refused", retryable=False) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS {type(exc).__name__}", retryable=False) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError("SMTP server does not support STARTTLS/AUTH", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(type(exc).__name__, retryable=True) from None


KINDS = {"discord": DiscordChannel, "slack": SlackChannel, "webhook": WebhookChannel, "email": EmailChannel}


def build_channel(spec: dict) -> Channel:
    return KINDS[spec["type"]](spec)
