"""The writer's first stage: every finished span feeds the interval's aggregates; only retained
ones become record dicts.

``Stage.convert(items)`` replaces ``records.to_records`` in the writer: it reads each buffered item
(a ``Span`` or a ``records.COMPACT_SPAN`` tuple) field by field, updates its aggregate, and hands
it to retention (``retention.Tail``), which holds children as the items themselves until their
root ends. ``Stage.metrics()`` ends the interval: one ``metrics`` record per key (written every
``metrics.interval_s`` and on every flush, so every stop path writes the last interval).
"""
from __future__ import annotations

import time

from autoperf import records
from autoperf.metrics.aggregates import FOLD_AT, Agg, exemplar, key_labels, metrics_record, record_value
from autoperf.metrics.retention import Pending, RetainSettings, Tail

_FLOW_KINDS = records.FLOW_KINDS
#: a pool job's parts (attributes the pool integration sets) -> their measure in the metrics records
_JOB_PARTS = (("queue_wait", "queue_wait_ms"), ("run", "run_ms"), ("transfer", "transfer_ms"))
_ROOT = object()        # the flow-name slot of a root span's aggregate in Stage.fast


class Stage:
    def __init__(self, settings: RetainSettings | None = None):
        self.settings = settings or RetainSettings()
        self.tail = Tail(self.settings)
        self.table: dict = {}
        self.fast: dict = {}        # a cache over ``table`` (see convert)
        self.held: list = []        # unkept roots waiting one drain for a late loop_blocked
        self._start_wall = time.time_ns()
        self._next = time.monotonic() + self.settings.interval_s

    def configure(self, settings: RetainSettings):
        self.settings = self.tail.settings = settings
        self._next = min(self._next, time.monotonic() + settings.interval_s)

    # -- every buffered item ------------------------------------------------------------------
    def convert(self, items, settings: records.Settings, flows=None) -> list:
        """Record dicts for a batch of buffered items, in order, retained spans only. ``flows``: a
        list that gets the unretained flows' ``flow_complete`` records instead (the pipeline shows
        them to processors and sinks as one list)."""
        records._refresh_wall_offset()          # noqa: SLF001 - the batch's wall clock
        offset = records._wall_offset_ns        # noqa: SLF001
        out = []
        append = out.append
        append_flow = append if flows is None else flows.append
        keep_all = self.settings.all
        written = []                            # spans to convert (in order) under retain: all
        table = self.table
        ex_n = self.settings.exemplars
        tail = self.tail
        pending = tail.pending
        remember = tail.remember
        flow_complete_only = records.flow_complete_only
        max_pending = self.settings.max_pending
        warning_ns = settings.warning_ns
        now = time.monotonic()
        hold = "loop_blocked" in self.settings.rules
        held_now = []
        fast = self.fast                        # name -> {flow name (_ROOT for roots) -> Agg}: success spans
        last_root = last_p = None               # the flow of the previous item (children come in runs)
        last_flow_name = last_flow_id = None
        for item in items:
            if type(item) is tuple:              # COMPACT_SPAN
                (name, kind, attrs, parent, site, span_id, _thread, _task, start_ns, dur, status, _error,
                 more) = item
                root = None if parent is None else (parent.root or parent)
            elif type(item) is dict:
                if written:
                    records._span_records(written, settings, append, "all")   # noqa: SLF001
                    written = []
                if item.get("type") == "loop_blocked":
                    tail.add_block(item)
                append(records.fill_record(item, settings))
                continue
            else:
                name = item.name
                kind = item.kind
                attrs = item.attrs
                parent = item.parent
                site = item.site
                span_id = item.span_id
                start_ns = item.start_ns
                dur = item.duration_ns
                status = item.status
                root = item.root
                more = None
            if root is None:
                flow_name = None
                flow_id = span_id
                fkey = _ROOT
            elif root is last_root:
                flow_name = fkey = last_flow_name
                flow_id = last_flow_id
            else:
                if root.is_remote:
                    flow_name, flow_id = root.flow_name, root.flow_id
                else:
                    flow_name, flow_id = (root.name if root.kind in _FLOW_KINDS else None), root.span_id
                fkey = last_flow_name = flow_name
                last_flow_id = flow_id
                last_root = root
                last_p = None
            # the interval's aggregate: a per-name cache for success spans (no 7-tuple key to build
            # and hash), the table itself for the rest (db spans: keyed by fingerprint too)
            agg = None
            if status == "success" and kind != "db":
                by_flow = fast.get(name)
                if by_flow is None:
                    by_flow = fast[name] = {}
                agg = by_flow.get(fkey)
                if agg is not None and agg.kind is not kind:
                    agg = None
            if agg is None:
                fingerprint = None
                if kind == "db":
                    fingerprint = (more and more.get("fingerprint")) or (attrs and attrs.get("fingerprint")) or None
                key = (name, kind, status, flow_name, root is None, "duration", fingerprint)
                agg = table.get(key)
                if agg is None:
                    agg = table[key] = Agg(site, ex_n)
                    agg.kind = kind
                    agg.labels = key_labels(kind, root is None, attrs, more)
                if status == "success" and kind != "db" and agg.kind is kind:
                    by_flow[fkey] = agg
            durs = agg.durs                      # record_value(agg, ...), inlined: every span
            durs.append(dur)
            if len(durs) >= FOLD_AT:
                agg.fold()
            if dur > agg.ex_floor:
                exemplar(agg, ex_n, dur, span_id, flow_id, start_ns)
            if site is not None:
                if site.sla_ms is not None and dur // 1000 / 1000 > site.sla_ms:
                    agg.over_sla += 1
                if site.threshold_ms is not None and dur // 1000 / 1000 > site.threshold_ms:
                    agg.over_threshold += 1
            if kind == "job" and attrs:
                self._job_parts(name, status, flow_name, root is None, attrs, ex_n, span_id, flow_id, start_ns)
            # -- retention -------------------------------------------------------------------
            if root is None:
                if attrs and ("answered" in attrs or "deadline_missed" in attrs):
                    self._interaction(name, kind, status, agg, attrs, ex_n, span_id, start_ns)
                if keep_all:
                    written.append(item)
                    _count_retained(agg, "all")
                    continue
                # a root: decide for it and its children
                if item is last_root:
                    last_root = last_p = None
                p = pending.pop(item, None) if type(item) is not tuple else None
                rule = tail.rule(dur, status, site, attrs, start_ns + offset, flow_id, warning_ns, p)
                if rule is None and hold and (item[7] if type(item) is tuple else item.task) is not None:
                    # a root that ran in an asyncio task: the loop_blocked record of a block it ended
                    # in comes after it (written once the loop step is over): decide after the next drain
                    held_now.append((item, p, agg, start_ns + offset, dur))
                    continue
                if rule is None:                # _decided's unkept case, inline (most roots)
                    if type(item) is not tuple and item.children is not None:
                        append_flow(flow_complete_only(item, settings))
                    remember(span_id, None)
                    continue
                self._decided(item, p, agg, rule, settings, append, append_flow)
                continue
            if keep_all:
                written.append(item)
                continue
            if root.is_remote:
                # its flow lives in another process (a pool job): the flow's sample (the same
                # answer there and here) or the span's own rules, decided now, nothing held
                rule = tail.rule(dur, status, site, attrs, start_ns + offset, flow_id, warning_ns, None)
                if rule is not None:
                    records._span_records((item,), settings, append, rule)   # noqa: SLF001
                continue
            p = last_p
            if p is None:
                p = pending.get(root)
                if p is None:
                    rule = tail.decision(root.span_id)
                    if rule is not False:            # its root has ended already
                        if rule is not None:
                            records._span_records((item,), settings, append, rule)   # noqa: SLF001
                        continue
                    p = pending[root] = Pending()
                    p.since = now
                    p.slow = False
                last_p = p
            if len(p) < max_pending:
                p.append(item)
            else:
                tail.children_dropped += 1
            if not p.slow:
                threshold = warning_ns
                if site is not None and site.threshold_ms is not None:
                    threshold = site.threshold_ms * 1e6
                if dur > threshold:
                    p.slow = True
        if written:
            records._span_records(written, settings, append, "all")   # noqa: SLF001
        if self.held:
            self.held = self._settle(self.held, settings, append, final=True, append_flow=append_flow)
        if held_now:
            self.held = self._settle(held_now, settings, append, final=False, append_flow=append_flow)
        return out

    def settle(self, settings: records.Settings, final=False) -> list:
        """Decide the roots held back by the last drain (``final``: all of them, now)."""
        out = []
        if self.held:
            self.held = self._settle(self.held, settings, out.append, final)
        return out

    def _settle(self, held, settings, append, final, append_flow=None):
        """Keep held roots that overlapped a block now known; the others wait once more, or (final) go."""
        blocks = self.tail.blocks
        left = []
        for item, p, agg, start_wall, dur in held:
            rule = None
            if blocks:
                end = start_wall + dur
                if any(b_start < end and b_end > start_wall for b_start, b_end in blocks):
                    rule = "loop_blocked"
            if rule is None and not final:
                left.append((item, p, agg, start_wall, dur))
                continue
            late = self.tail.pending.pop(item, None) if type(item) is not tuple else None
            if late is not None:     # children that ended after their root
                p = late if p is None else p
                if late is not p:
                    p.extend(late)
            self._decided(item, p, agg, rule, settings, append, append_flow or append)
        return left

    def _decided(self, item, p, agg, rule, settings, append, append_flow):
        """Write what ``rule`` keeps of a root and its pending children (the flow_complete always)."""
        _count_retained(agg, rule)
        if rule is not None:
            group = p if p is not None else []
            group.append(item)
            records._span_records(group, settings, append, rule)   # noqa: SLF001
        elif type(item) is not tuple and item.children is not None:
            append_flow(records.flow_complete_only(item, settings))
        self.tail.remember(item[5] if type(item) is tuple else item.span_id, rule)

    def _job_parts(self, name, status, flow_name, is_root, attrs, ex_n, span_id, flow_id, start_ns):
        """A pool job's queue wait, run and transfer times as measures of their own: the report's job
        table then covers every job, not only those of the flows kept whole."""
        table = self.table
        for measure, attr in _JOB_PARTS:
            ms = attrs.get(attr)
            if type(ms) is float or type(ms) is int:
                key = (name, "job", status, flow_name, is_root, measure, None)
                agg = table.get(key)
                if agg is None:
                    agg = table[key] = Agg(None, ex_n)
                    agg.kind = "job"
                record_value(agg, int(ms * 1e6), ex_n, span_id, flow_id, start_ns)

    def _interaction(self, name, kind, status, agg, attrs, ex_n, span_id, start_ns):
        """A flow answering an interaction: its deadline, and its first response as a measure."""
        agg.interactions += 1
        missed = bool(attrs.get("deadline_missed"))
        if missed:
            agg.deadline_missed += 1
        first = attrs.get("first_response_ms")
        if type(first) is float or type(first) is int:
            key = (name, kind, status, None, True, "first_response", None)
            fagg = self.table.get(key)
            if fagg is None:
                fagg = self.table[key] = Agg(None, ex_n)
            fagg.interactions += 1
            if missed:
                fagg.deadline_missed += 1
            record_value(fagg, int(first * 1e6), ex_n, span_id, span_id, start_ns)

    # -- intervals ----------------------------------------------------------------------------
    def due(self) -> bool:
        return time.monotonic() >= self._next

    def metrics(self, settings: records.Settings) -> list:
        """End the interval: its ``metrics`` records (and a ``warning`` for retention losses)."""
        now = time.monotonic()
        self._next = now + self.settings.interval_s
        out = self.settle(settings, final=True) if self.held else []
        if not self.settings.all:
            self.tail.evict(now)
        end_wall = time.time_ns()
        table, self.table = self.table, {}
        self.fast = {}
        start_wall, self._start_wall = self._start_wall, end_wall
        if table:
            start_iso, end_iso = records.iso_from_wall_ns(start_wall), records.iso_from_wall_ns(end_wall)
            interval_s = round((end_wall - start_wall) / 1e9, 3)

            def iso_of(perf_ns):
                return records.iso_from_wall_ns(records.wall_ns_of(perf_ns))

            for key, agg in table.items():
                out.append(records.fill_record(metrics_record(key, agg, start_iso, end_iso, interval_s, iso_of),
                                               settings))
        losses = self.tail.losses()
        if losses:
            out.append(records.fill_record({
                "type": "warning", "level": "WARNING", "code": "retention_overflow", **losses,
                "message": (f"retention: {losses['children_dropped']} child spans over retain.max_pending dropped, "
                            f"{losses['roots_evicted']} roots that never ended evicted "
                            f"({losses['children_evicted']} child spans); their aggregates are counted")},
                settings))
        return out

    def after_fork(self):
        """A forked child starts empty: what the parent aggregated and holds is the parent's to write."""
        self.table = {}
        self.fast = {}
        self.held = []
        self.tail.clear()
        self._start_wall = time.time_ns()
        self._next = time.monotonic() + self.settings.interval_s


def _count_retained(agg, rule):
    if rule is None:
        return
    agg.retained += 1
    by = agg.retained_by
    if by is None:
        by = agg.retained_by = {}
    by[rule] = by.get(rule, 0) + 1
