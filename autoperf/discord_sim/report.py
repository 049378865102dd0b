"""What a simulation measured: per-step latency as the users saw it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["StepResult", "StepStats", "SimReport", "percentile"]


def percentile(values: List[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class StepResult:
    """One step one simulated user played."""
    flow: str
    step: str
    kind: str
    user_id: int
    t_start: float                       # seconds since the scenario started
    status: str = "ok"                   # ok | timeout | error | failed (an expectation) | skipped
    actor: str = ""                      # the actor of a multi-user flow
    first_ms: Optional[float] = None     # dispatch -> interaction callback (or first reply to a message)
    final_ms: Optional[float] = None     # dispatch -> last followup / edit / reply
    late_ms: Optional[float] = None      # a callback after the 3 s deadline (Discord rejects it)
    callback_type: Optional[int] = None
    error: Optional[str] = None
    interaction_id: Optional[int] = None
    message_id: Optional[int] = None     # the user's message; a wait: the bot message it matched
    expected: Optional[str] = None       # expect: {status: timeout|error} met: the step is ok

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def _summary(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
            "max": max(values), "mean": sum(values) / len(values)}


@dataclass
class StepStats:
    # counters; alike in shape only to Scenario's settings (duplicates): fields, no logic to share
    step: str
    kind: str
    count: int = 0
    ok: int = 0
    timeouts: int = 0
    errors: int = 0
    failed: int = 0
    skipped: int = 0
    first_ms: Dict[str, Optional[float]] = field(default_factory=dict)
    final_ms: Dict[str, Optional[float]] = field(default_factory=dict)
    error_samples: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SimReport:
    """The outcome of one scenario run."""
    seed: int
    duration_s: float = 0.0
    flows_started: int = 0
    flows_completed: int = 0
    results: List[StepResult] = field(default_factory=list)
    steps: Dict[str, StepStats] = field(default_factory=dict)
    bot: Dict[str, Any] = field(default_factory=dict)
    calls: List[Any] = field(default_factory=list)            # RecordedCall list (server.calls)
    http: List[Dict[str, Any]] = field(default_factory=list)  # hosts other than Discord the bot tried to reach
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None                               # fatal: e.g. the bot never connected

    @property
    def ok(self) -> bool:
        """True when the bot connected and no step timed out, failed an expectation or erred."""
        return self.error is None and all(s.timeouts == 0 and s.errors == 0 and s.failed == 0
                                          for s in self.steps.values())

    def compute(self) -> "SimReport":
        stats: Dict[str, StepStats] = {}
        firsts: Dict[str, List[float]] = {}
        finals: Dict[str, List[float]] = {}
        for r in self.results:
            s = stats.get(r.step)
            if s is None:
                s = stats[r.step] = StepStats(step=r.step, kind=r.kind)
            s.count += 1
            if r.status == "ok":
                s.ok += 1
            elif r.status == "timeout":
                s.timeouts += 1
            elif r.status == "skipped":
                s.skipped += 1
            elif r.status == "failed":
                s.failed += 1
            else:
                s.errors += 1
            if r.error and len(s.error_samples) < 5 and r.error not in s.error_samples:
                s.error_samples.append(r.error)
            if r.first_ms is not None and r.status != "skipped":
                firsts.setdefault(r.step, []).append(r.first_ms)
            if r.final_ms is not None and r.status != "skipped":
                finals.setdefault(r.step, []).append(r.final_ms)
        for name, s in stats.items():
            s.first_ms = _summary(firsts.get(name, []))
            s.final_ms = _summary(finals.get(name, []))
        self.steps = stats
        return self

    def add_http(self, hosts: List[Dict[str, Any]]) -> None:
        """Merge hosts seen by the bot-side hook (loopback, passed through) into ``http``."""
        known = {h["host"] for h in self.http}
        self.http.extend(h for h in hosts if h["host"] not in known)
        self.http.sort(key=lambda h: (h.get("passed_through", False), -h["requests"], h["host"]))

    def calls_to(self, route: str) -> List[Any]:
        route = " ".join(route.split())
        return [c for c in self.calls if c.route == route]

    def to_dict(self, *, with_calls: bool = False) -> Dict[str, Any]:
        out = {"seed": self.seed, "duration_s": self.duration_s, "flows_started": self.flows_started,
               "flows_completed": self.flows_completed, "ok": self.ok, "error": self.error,
               "warnings": list(self.warnings), "bot": dict(self.bot), "http": [dict(h) for h in self.http],
               "steps": {k: v.to_dict() for k, v in self.steps.items()}}
        if with_calls:
            out["calls"] = [c.to_dict() for c in self.calls]
            out["results"] = [r.to_dict() for r in self.results]
        return out

    def to_records(self) -> List[Dict[str, Any]]:
        """One `sim_step` record per step name (see docs/discord_sim.md), for the autoperf pipeline."""
        recs = []
        for s in self.steps.values():
            recs.append({"type": "sim_step", "step": s.step, "kind": s.kind, "count": s.count, "ok": s.ok,
                         "timeouts": s.timeouts, "errors": s.errors, "failed": s.failed, "skipped": s.skipped,
                         "first_ms": s.first_ms, "final_ms": s.final_ms, "seed": self.seed,
                         "level": "WARNING" if (s.timeouts or s.errors or s.failed) else "INFO"})
        return recs

    def format(self) -> str:
        def f(v: Optional[float]) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines = [f"discord_sim: {self.flows_started} flows in {self.duration_s:.1f}s (seed {self.seed})"
                 + (f" — ERROR: {self.error}" if self.error else "")]
        head = (f"{'step':<32} {'n':>5} {'ok':>5} {'t/o':>4} {'fail':>4} {'err':>4} {'first p50':>9} {'p95':>7} "
                f"{'p99':>7} {'final p50':>9} {'p95':>7} {'p99':>7}")
        lines.append(head)
        for s in sorted(self.steps.values(), key=lambda s: s.step):
            lines.append(f"{s.step[:32]:<32} {s.count:>5} {s.ok:>5} {s.timeouts:>4} {s.failed:>4} {s.errors:>4} "
                         f"{f(s.first_ms.get('p50')):>9} {f(s.first_ms.get('p95')):>7} {f(s.first_ms.get('p99')):>7} "
                         f"{f(s.final_ms.get('p50')):>9} {f(s.final_ms.get('p95')):>7} {f(s.final_ms.get('p99')):>7}")
            for e in s.error_samples:
                lines.append(f"    ! {e}")
        lines.extend(self._format_http())
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)

    def _format_http(self) -> List[str]:
        if not self.http:
            return []
        lines = ["other HTTP the bot sent (kept off the network: scenario http: answers, else 404):"]
        for h in self.http:
            if h.get("passed_through"):
                answered = "loopback, passed through"
            else:
                answered = ", ".join(f"{code} x{n}" for code, n in sorted(h["statuses"].items()))
                answered += f" ({h['static']} from http: rules)" if h.get("static") else " (no http: rule)"
            lines.append(f"  {h['host']:<40} {h['requests']:>6}  {answered}")
            lines.extend(f"      {p}" for p in h.get("paths", []))
        return lines
