"""`autoperf report | check | regress | compare | suggest`.

``register(subparsers)`` adds the sub-commands; each sets ``handler`` (``args.handler(args) -> exit code``).
Module import is light: the analysis modules are imported inside the handlers.
Run standalone with ``python -m autoperf.analysis.cli report ...``.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register", "main", "build_parser"]

_EPILOG_INPUTS = ("Inputs: LOG files or directories (performance_*.log, .gz too); default --log-dir logs. "
                  "--dsn reads the PostgreSQL store instead (table performance_metrics).")


def _add_inputs(p, positional=True, window=True):
    if positional:
        p.add_argument("inputs", nargs="*", metavar="LOG", help="log files or directories")
    p.add_argument("--log-dir", default="logs", help="directory with performance_*.log (default: logs)")
    p.add_argument("--dsn", default=None, help="read the PostgreSQL store (table performance_metrics) instead of "
                                               "log files; '--dsn env' takes $AUTOPERF_DSN")
    p.add_argument("--table", default="performance_metrics", help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help="autoperf.yaml (default: $AUTOPERF_CONFIG or ./autoperf.yaml)")
    p.add_argument("--progress", action="store_true", default=None, help="progress on stderr (default: when a TTY)")
    p.add_argument("--now", default=None, help=argparse.SUPPRESS)   # pin "now" (tests)
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="processes for log files (default: one per core from 256 MB of input, one below)")
    # one reader since the metrics records (issue 17.5); the flag stays accepted for existing scripts
    p.add_argument("--engine", choices=["auto", "columnar", "python"], default=None, help=argparse.SUPPRESS)
    if window:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--day", default=None, help="one UTC day: YYYY-MM-DD, today, yesterday")
        g.add_argument("--week", action="store_true", help="the last 7 days")
        p.add_argument("--since", default=None, help="start (ISO time, or an age like 24h / 7d)")
        p.add_argument("--until", default=None, help="end, exclusive (ISO time or age)")


class UsageError(Exception):
    pass


def _now(args):
    import datetime as dt
    from .reader import parse_time
    if getattr(args, "now", None):
        return parse_time(args.now)
    return dt.datetime.now(dt.timezone.utc)


def _window(args):
    import datetime as dt
    from .reader import parse_time
    now = _now(args)
    since = until = None
    if getattr(args, "day", None):
        d = parse_time(args.day, now).replace(hour=0, minute=0, second=0, microsecond=0)
        since, until = d, d + dt.timedelta(days=1)
    elif getattr(args, "week", False):
        since, until = now - dt.timedelta(days=7), None
    if getattr(args, "since", None):
        since = parse_time(args.since, now)
    if getattr(args, "until", None):
        until = parse_time(args.until, now)
    return since, until


def _config(args):
    """(config data dict, slo settings)."""
    from .slo import slo_settings
    data = {}
    path = args.config
    if path is None:
        path = os.environ.get("AUTOPERF_CONFIG") or ("autoperf.yaml" if os.path.isfile("autoperf.yaml") else None)
    if path:
        if not os.path.isfile(path):
            raise UsageError(f"config file not found: {path}")
        try:
            from autoperf.config import ConfigError, load_config
        except ImportError:      # config package unavailable: plain YAML
            import yaml
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        else:
            try:
                data = load_config(path).data
            except ConfigError as e:
                raise UsageError(str(e)) from None
    return data, slo_settings(data)


def _progress(args):
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    if not show:
        return None

    def cb(done, total):
        sys.stderr.write(f"\rread {done / 1e6:,.0f} / {total / 1e6:,.0f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return cb


def _source(args, since, until, inputs=None):
    """An iterable of records with .stats()."""
    from .reader import expand_inputs, iter_records_from_pg, read_records
    dsn = args.dsn
    if dsn == "env":
        dsn = os.environ.get("AUTOPERF_DSN")
        if not dsn:
            raise UsageError("--dsn env: $AUTOPERF_DSN is not set")
    if dsn:
        return iter_records_from_pg(dsn, since, until, table=args.table)
    given = inputs if inputs is not None else args.inputs
    if not given and not os.path.isdir(args.log_dir):
        raise UsageError(f"no log files: {args.log_dir} is not a directory (give LOG files, --log-dir or --dsn)")
    paths = expand_inputs(given, args.log_dir)
    if not paths:
        where = ", ".join(inputs if inputs is not None else args.inputs) or args.log_dir
        raise UsageError(f"no log files found in {where} (expected performance_*.log)")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file: {missing[0]}")
    return read_records(paths, since=since, until=until, progress=_progress(args))


def _write(args, text):
    out = getattr(args, "output", None)
    if out and out != "-":
        d = os.path.dirname(os.path.abspath(out))
        os.makedirs(d, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _colour(args):
    out = getattr(args, "output", None)
    return (not out or out == "-") and sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def _guard(fn):
    def run(args):
        try:
            return fn(args)
        except UsageError as e:
            print(f"autoperf {args.command_name}: {e}", file=sys.stderr)
            return 2
        except ConnectionError as e:
            print(f"autoperf {args.command_name}: {e}", file=sys.stderr)
            return 2
        except ValueError as e:
            print(f"autoperf {args.command_name}: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return 0
    run.__name__ = fn.__name__
    return run


def _agg_kwargs(cfg, slo):
    from .slo import sla_from_config
    return {"sla": sla_from_config(cfg),
            "thresholds_ms": (float(slo["commands_p95_ms"]), float(slo["commands_p99_ms"]), float(slo["deadline_ms"]))}


PROCESSES_FROM_BYTES = 256 << 20     # smaller inputs: starting workers and merging costs more than it saves
SPLIT_FROM_BYTES = 64 << 20          # with metrics: the worker's start and the merge cost ~0.1 s


def _aggregate(args, cfg, slo, since, until, track_flows=True):
    """One pass over the inputs -> (Aggregator, source stats). Big file inputs use several processes."""
    from .reader import is_metrics_file
    src = _source(args, since, until)
    kw = _agg_kwargs(cfg, slo)
    kw["track_flows"] = track_flows
    jobs = getattr(args, "jobs", None)
    paths = getattr(src, "paths", None)
    auto = jobs is None or jobs == 0
    if paths is not None and any(is_metrics_file(p) for p in paths):
        # counts come from the metrics files and a process must know what they cover before its spans:
        # a worker folds them while this process reads the span files, the coverage predicted and then
        # checked (split.py); else (one core, -j 1, small inputs, a failed prediction) one process
        if jobs != 1 and (os.cpu_count() or 1) > 1 and sum(
                os.path.getsize(p) for p in paths if os.path.exists(p)) >= SPLIT_FROM_BYTES:
            from .split import aggregate_split
            done = aggregate_split(paths, src.since, src.until, kw, progress=src.progress)
            if done is not None:
                return done
        jobs, auto = 1, False
    processes = paths is not None and jobs != 1 and (not auto or (os.cpu_count() or 1) > 1 and sum(
        os.path.getsize(p) for p in paths if os.path.exists(p)) >= PROCESSES_FROM_BYTES)
    if processes:           # each worker reads a byte span; merged in order
        from .parallel import aggregate_files
        return aggregate_files(paths, src.since, src.until, jobs=None if auto else jobs, agg_kwargs=kw,
                               progress=src.progress)
    from .aggregate import Aggregator
    agg = Aggregator(**kw)
    agg.add_all(src)
    agg.flush_open()
    return agg, src.stats()


# ---------------------------------------------------------------- handlers
@_guard
def cmd_report(args):
    from .render import render
    if args.send:
        return _send_daily(args)
    cfg, slo = _config(args)
    since, until = _window(args)
    agg, stats = _aggregate(args, cfg, slo, since, until)
    r = agg.result(top=args.top, suggest_options={"slow_query_ms": slo["slow_query_ms"]})
    r["source"] = stats
    r["first_response_slas"] = {name: f["first_response_p95_ms"] for name, f in (slo.get("flows") or {}).items()
                                if isinstance(f, dict) and f.get("first_response_p95_ms") is not None}
    r["error_rate_limit_pct"] = float(slo["error_rate_pct"])
    from .reader import to_ts
    r["window"] = {"since": to_ts(since), "until": to_ts(until)}
    kw = {"colour": _colour(args)} if args.format == "terminal" else {}
    _write(args, render(r, args.format, **kw))
    return 0


def _split_aggregates(args, cfg, slo, baseline_start, window_start, window_end):
    """One pass over [baseline_start, window_end): (baseline aggregate, window aggregate, source stats)."""
    from .aggregate import Aggregator
    from .reader import to_ts
    src = _source(args, baseline_start, window_end)
    base, cur = Aggregator(**_agg_kwargs(cfg, slo)), Aggregator(**_agg_kwargs(cfg, slo))
    ws_s = to_ts(window_start)
    for rec in src:
        ts = rec.get("timestamp")
        if type(ts) is str and ts >= ws_s:
            cur.add(rec)
        else:
            base.add(rec)
    cur.flush_open()
    return base, cur, src.stats()


def _send_daily(args):
    """`report --send`: the summary of one UTC day (default yesterday) to the summary channels, its regressions
    against the days before to the alert channels (alerts/daily.py). Exit 0 when everything was delivered."""
    import datetime as dt

    from autoperf import alerts
    from autoperf.alerts import daily

    from .reader import parse_time
    from .regress import compare_aggregators
    from .render import render
    from .render_html import render_html
    from .slo import evaluate
    if args.since or args.until or args.week:
        raise UsageError("--send sends one UTC day: give --day (default: yesterday)")
    cfg, slo = _config(args)
    acfg = alerts.settings(cfg.get("alerts"))
    d = acfg["daily_summary"]
    day = parse_time(args.day or "yesterday", _now(args)).replace(hour=0, minute=0, second=0, microsecond=0)
    label = day.date().isoformat()
    base, cur, stats = _split_aggregates(args, cfg, slo, day - dt.timedelta(days=int(d["baseline_days"])), day,
                                         day + dt.timedelta(days=1))
    r = cur.result(top=args.top, suggest_options={"slow_query_ms": slo["slow_query_ms"]})
    r["source"] = stats
    reg = None
    if d["regressions"]:
        reg = compare_aggregators(base, cur, threshold=float(d["threshold_pct"]) / 100.0,
                                  min_samples=int(slo["min_samples"]), alpha=float(slo["alpha"]),
                                  slow_query_ms=slo["slow_query_ms"])
        reg["baseline_days"] = int(d["baseline_days"])
    service = cfg.get("service")
    summary = daily.build_summary(label, r, reg, evaluate(cur, slo), service,
                                  render_html(r, title=f"autoperf report {service or ''} {label}".replace("  ", " ")))
    channels = daily.summary_channels(acfg)
    alert = daily.regression_alert(label, reg, service) if reg else None
    got_summary = {ch.name for ch in channels}          # the summary lists the regressions already
    alert_channels = [ch for ch in daily.regression_channels(acfg, alert) if ch.name not in got_summary] if alert else []
    if not channels and not alert_channels:
        raise UsageError("no channel takes the daily summary: add an email or webhook channel to alerts.channels "
                         "(or name channels in alerts.daily_summary.channels)")
    if args.output:
        _write(args, render(r, args.format))
    failed = 0
    for what, chans, item in (("daily summary", channels, summary), ("regressions", alert_channels, alert)):
        for name, reason in daily.send(chans, item, what == "daily summary", int(acfg["max_attempts"]),
                                       float(acfg["retry_base_s"])):
            print(f"{what} {label} → {name}: " + ("sent" if reason is None else f"FAILED ({reason})"))
            failed += reason is not None
    if reg is not None and alert is None:
        print(f"regressions {label}: none")
    return 1 if failed else 0


@_guard
def cmd_check(args):
    from .render_verdicts import render_check
    from .slo import evaluate
    cfg, slo = _config(args)
    since, until = _window(args)
    agg, stats = _aggregate(args, cfg, slo, since, until, track_flows=False)   # no suggestions needed
    res = evaluate(agg, slo)
    res["source"] = stats
    _write(args, render_check(res, "json" if args.json else "terminal", _colour(args)))
    return 0 if res["ok"] else 1


def _threshold(text):
    t = str(text).strip()
    if t.endswith("%"):
        return float(t[:-1]) / 100.0
    v = float(t)
    return v / 100.0 if v > 1 else v


def _compare(args, slo, base, cur):
    """``regress``'s and ``compare``'s test of ``cur`` against ``base`` with the options they share."""
    from .regress import compare_aggregators
    return compare_aggregators(base, cur, threshold=_threshold(args.threshold), min_samples=args.min_samples,
                               alpha=args.alpha, slow_query_ms=slo["slow_query_ms"])


def _write_comparison(args, res, title):
    """Writes a comparison; the exit code is 1 when anything regressed."""
    from .render_verdicts import render_compare
    _write(args, render_compare(res, args.format, _colour(args), title=title))
    return 1 if res["regressions"] else 0


@_guard
def cmd_regress(args):
    import datetime as dt
    from .reader import parse_time, to_ts
    from .regress import trend
    cfg, slo = _config(args)
    now = _now(args)
    w = args.window.strip().lower()
    if w == "today":
        ws, we = now.replace(hour=0, minute=0, second=0, microsecond=0), now
    elif w == "yesterday":
        we = now.replace(hour=0, minute=0, second=0, microsecond=0)
        ws = we - dt.timedelta(days=1)
    elif w[-1:] in "smhdw" and w[:-1].replace(".", "").isdigit():
        ws, we = parse_time(w, now), now
    else:                                            # a date: that UTC day
        ws = parse_time(args.window, now).replace(hour=0, minute=0, second=0, microsecond=0)
        we = ws + dt.timedelta(days=1)
    b = args.baseline.strip().lower()
    if b[-1:] not in "smhdw":
        raise UsageError("--baseline must be a duration like 7d or 48h")
    bs = ws - (now - parse_time(b, now))
    base, cur, stats = _split_aggregates(args, cfg, slo, bs, ws, we)
    res = _compare(args, slo, base, cur)
    res["trend"] = trend(base, cur)
    res["window"] = {"start": to_ts(ws), "end": to_ts(we)}
    res["baseline_window"] = {"start": to_ts(bs), "end": to_ts(ws)}
    res["source"] = stats
    return _write_comparison(args, res, f"Regressions: {res['window']['start']} → {res['window']['end']} vs "
                                        f"{res['baseline_window']['start']} → {res['baseline_window']['end']}")


@_guard
def cmd_compare(args):
    from .aggregate import Aggregator
    from .regress import split_by_tag
    cfg, slo = _config(args)
    since, until = _window(args)
    tags = args.tag or []
    if tags:
        if len(tags) != 2:
            raise UsageError("give --tag twice: --tag variant=A --tag variant=B")
        kv = [t.split("=", 1) for t in tags]
        if any(len(x) != 2 for x in kv) or kv[0][0] != kv[1][0]:
            raise UsageError("--tag must be KEY=VALUE with the same KEY twice")
        src = _source(args, since, until, inputs=args.sides)
        a, b = split_by_tag(src, kv[0][0], kv[0][1], kv[1][1])
        labels = (tags[0], tags[1])
        stats = {"source": src.stats()}
    else:
        if len(args.sides) != 2:
            raise UsageError("give two inputs A and B (each a file, directory, glob or comma-separated list), "
                             "or --tag KEY=A --tag KEY=B")
        a, b = Aggregator(), Aggregator()
        stats = {}
        for agg, side, key in ((a, args.sides[0], "a"), (b, args.sides[1], "b")):
            parts = [x for x in side.split(",") if x]
            src = _source(args, since, until, inputs=parts)
            agg.add_all(src)
            stats[key] = src.stats()
        labels = tuple(args.sides)
    res = _compare(args, slo, a, b)
    res["labels"] = {"a": labels[0], "b": labels[1]}
    res["sources"] = stats
    return _write_comparison(args, res, f"Compare A={labels[0]} (baseline) with B={labels[1]}")


@_guard
def cmd_suggest(args):
    from .render_verdicts import render_suggestions
    from .suggest import suggestions_from
    cfg, slo = _config(args)
    since, until = _window(args)
    agg, _stats = _aggregate(args, cfg, slo, since, until)
    items = suggestions_from(agg, slow_query_ms=slo["slow_query_ms"])
    from .render_sections import _suggest_note
    scope = _suggest_note({"retention": agg.retention.to_dict(), "suggestions_flows": agg.retained_seen}, items)
    _write(args, render_suggestions(items, args.format, _colour(args), scope=scope if items else None))
    return 0


# ---------------------------------------------------------------- wiring
def register(subparsers) -> None:
    """Add report / check / regress / compare / suggest to an argparse subparsers object."""
    p = subparsers.add_parser("report", help="performance report (terminal, markdown, json, html)",
                              description="Performance report over JSON-line logs or the PostgreSQL store.",
                              epilog=_EPILOG_INPUTS)
    _add_inputs(p)
    p.add_argument("--format", "-f", choices=["terminal", "markdown", "json", "html"], default="terminal")
    p.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    p.add_argument("--top", type=int, default=10, help="rows in the slowest-operations table (default 10)")
    p.add_argument("--send", action="store_true",
                   help="send the summary of one UTC day (--day, default yesterday) to the summary channels and "
                        "its regressions to the alert channels (autoperf.yaml alerts:); exit 1 if a delivery failed")
    p.set_defaults(handler=cmd_report, command_name="report")

    p = subparsers.add_parser("check", help="SLO / performance-budget gate (exit 1 on violations)",
                              description="Check the SLOs of autoperf.yaml `slo:` (defaults: seed plan 12.1/12.2).",
                              epilog=_EPILOG_INPUTS)
    _add_inputs(p)
    p.add_argument("--json", action="store_true", help="machine-readable output for CI")
    p.set_defaults(handler=cmd_check, command_name="check")

    def stat_opts(q):
        q.add_argument("--threshold", default="20%", help="slower than this counts (default 20%%)")
        q.add_argument("--min-samples", type=int, default=30, help="samples needed per side (default 30)")
        q.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
        q.add_argument("--format", "-f", choices=["terminal", "markdown", "json"], default="terminal")
        q.add_argument("-o", "--output", default=None)

    p = subparsers.add_parser("regress", help="regressions of today vs the previous 7 days (exit 1 if any)",
                              description="Compare a recent window with a baseline per flow and operation.",
                              epilog=_EPILOG_INPUTS)
    _add_inputs(p, window=False)
    p.add_argument("--window", default="today", help="today (default), yesterday, a date, or an age like 24h")
    p.add_argument("--baseline", default="7d", help="length of the baseline before the window (default 7d)")
    stat_opts(p)
    p.set_defaults(handler=cmd_regress, command_name="regress")

    p = subparsers.add_parser("compare", help="compare two runs A and B (files/dirs, or --tag k=A --tag k=B)",
                              description="A/B comparison: A is the baseline, B the candidate.")
    p.add_argument("sides", nargs="*", metavar="A B",
                   help="two inputs (file, dir, glob or comma-separated list); with --tag: the log inputs")
    _add_inputs(p, positional=False)
    p.add_argument("--tag", action="append", help="KEY=VALUE (twice) to split records by their tags")
    stat_opts(p)
    p.set_defaults(handler=cmd_compare, command_name="compare")

    p = subparsers.add_parser("suggest", help="optimisation suggestions (N+1, caching, gather, indexes, blocking, scaling)",
                              epilog=_EPILOG_INPUTS)
    _add_inputs(p)
    p.add_argument("--format", "-f", choices=["terminal", "markdown", "json"], default="terminal")
    p.add_argument("-o", "--output", default=None)
    p.set_defaults(handler=cmd_suggest, command_name="suggest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoperf")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
