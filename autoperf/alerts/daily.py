"""The daily outputs (seed 7.2, 7.3, 10.2): the summary of one UTC day to the summary channels, and that day's
regressions against the days before to the alert channels. ``autoperf report --send`` builds and sends them;
the running program runs that command once a day (schedule.py). Pure builders plus one delivery loop.
"""
from __future__ import annotations

import time

from autoperf.alerts.channels import DeliveryError, build_channel

__all__ = ["summary_channels", "regression_channels", "build_summary", "regression_alert", "send"]

SUMMARY_KINDS = ("email", "webhook")     # seed 10.2: email for daily summaries; a generic webhook gets it too


def summary_channels(cfg: dict) -> list:
    """The channels that get the summary: ``daily_summary.channels`` by name, else the email and webhook ones."""
    names = cfg["daily_summary"].get("channels") or []
    specs = [c for c in cfg.get("channels") or []
             if ((c.get("name") or c["type"]) in names if names else c["type"] in SUMMARY_KINDS)]
    return [ch for ch in map(build_channel, specs) if not ch.problem]


def regression_channels(cfg: dict, alert: dict) -> list:
    """The alert channels that want the regression alert (severity floor and rule filter, as for any alert)."""
    return [ch for ch in map(build_channel, cfg.get("channels") or []) if ch.wants(alert)]


def _ms(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def summary_text(day: str, r: dict, regressions: dict | None, check: dict | None) -> str:
    """Seed 7.2's daily report: commands run, response times per command, the slowest operations, resource
    use, error rate — plus the SLO check and the regressions of the day."""
    from autoperf.analysis.render_sections import summary_lines

    lines = [f"{k}: {v}" for k, v in summary_lines(r) if not k.startswith(("Skipped", "Dropped")) or v != "0"]
    lines += ["", "Commands (count, avg, p95, errors):"]
    for c in r["commands"][:25]:
        lines.append(f"  {c['name']:<32} {c['count']:>7,}  {_ms(c['avg_ms']):>9}  {_ms(c['p95_ms']):>9}  "
                     f"{c['errors']:>5,}")
    if len(r["commands"]) > 25:
        lines.append(f"  … and {len(r['commands']) - 25} more (see the attached report)")
    lines += ["", "Slowest operations (p95):"]
    for o in r["slowest_operations"][:10]:
        lines.append(f"  {o['name']:<40} {o['kind'] or '':<6} {o['count']:>7,}  {_ms(o['p95_ms']):>9}")
    res = (r.get("resources") or {}).get("metrics") or {}
    if res:
        peaks = ", ".join(f"{k} {v['peak']:,.1f}" for k, v in res.items()
                          if k in ("rss_mb", "max_worker_rss_mb", "cpu_percent", "db_pool_utilisation_pct",
                                   "process_pool_pending", "loop_lag_p95_ms"))
        lines += ["", f"Resources (peaks): {peaks}"]
    if check is not None:
        bad = check["violations"]
        lines += ["", f"SLO check: {sum(1 for c in check['checks'] if c['ok'] is not None)} objectives, "
                      + (f"{len(bad)} violated:" if bad else "all met")]
        lines += [f"  - {v['name']}{' [' + v['scope'] + ']' if v.get('scope') else ''}: {v['detail']}" for v in bad]
    if regressions is not None:
        lines += ["", regression_lines(regressions)]
    return "\n".join(lines) + "\n"


def regression_lines(res: dict) -> str:
    regs, slow = res["regressions"], res["new_slow_queries"]
    head = (f"Regressions vs the {res['baseline_days']} days before (> {res['threshold_pct']:g}% slower, credible): "
            f"{len(regs) or 'none'}")
    out = [head]
    for g in regs:
        which = "/".join(k for k in ("p50", "p95") if g.get(f"regressed_{k}"))
        change = g["p95_change_pct"] if g.get("regressed_p95") else g["p50_change_pct"]
        base = g["base_p95_ms"] if g.get("regressed_p95") else g["base_p50_ms"]
        cur = g["cur_p95_ms"] if g.get("regressed_p95") else g["cur_p50_ms"]
        out.append(f"  - {g['scope']} {g['name']}: {which} {change:+.0f}% ({_ms(base)} → {_ms(cur)}, "
                   f"n={g['cur_n']:,} vs {g['base_n']:,})")
    if slow:
        out.append(f"New slow queries: {len(slow)}")
        out += [f"  - {q['statement'] or q['fingerprint']}: p95 {_ms(q['p95_ms'])} over {q['count']:,} calls"
                for q in slow[:10]]
    return "\n".join(out)


def build_summary(day: str, r: dict, regressions: dict | None, check: dict | None, service: str | None,
                  html: str | None) -> dict:
    """``{subject, text, html, filename, payload}`` of the day's summary (payload: a generic webhook's JSON)."""
    who = f" {service}" if service else ""
    text = summary_text(day, r, regressions, check)
    t = r["totals"]
    return {"subject": f"[autoperf] daily summary{who} {day}", "text": text, "html": html,
            "filename": f"autoperf-report-{day}.html",
            "payload": {"type": "daily_summary", "day": day, "service": service, "text": text,
                        "commands": t["commands"], "errors": t["errors"], "error_rate_pct": t["error_rate_pct"],
                        "regressions": len(regressions["regressions"]) if regressions else None,
                        "slo_violations": len(check["violations"]) if check else None}}


def regression_alert(day: str, res: dict, service: str | None) -> dict | None:
    """One alert message for the day's regressions and new slow queries (seed 7.3), or None when there are
    none: a list in one message, not one message each."""
    n = len(res["regressions"]) + len(res["new_slow_queries"])
    if not n:
        return None
    alert = {"rule": "regression", "severity": "WARNING", "key": day, "field": "regressions", "value": n,
             "threshold": res["threshold_pct"], "count": 1, "description": "",
             "text": (f"{service}: " if service else "") + f"[WARNING] regressions on {day}\n" + regression_lines(res)}
    if service:
        alert["service"] = service
    return alert


def send(channels: list, item: dict, summary: bool, attempts: int = 4, retry_base_s: float = 1.0,
         sleep=time.sleep) -> list[tuple[str, str | None]]:
    """Deliver ``item`` to each channel (a summary or an alert), retrying what can be retried with exponential
    backoff; ``[(channel name, None or the reason it failed)]``."""
    out = []
    for ch in channels:
        reason = None
        for attempt in range(1, attempts + 1):
            try:
                (ch.send_summary if summary else ch.send)(item)
                reason = None
                break
            except DeliveryError as exc:
                reason = exc.reason
                if not exc.retryable:
                    break
            except Exception as exc:  # noqa: BLE001 - a channel bug is a failed delivery, not a crash
                reason = type(exc).__name__
                break
            if attempt < attempts:
                sleep(retry_base_s * 2 ** (attempt - 1))
        out.append((ch.name, reason))
    return out
