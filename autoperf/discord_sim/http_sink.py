"""Answers the HTTP a bot sends to hosts other than Discord during a simulation (rerouted by reroute.py).

A request arrives on the sim's port with its original Host header and path; the first matching
``http:`` rule of the scenario answers it (status, body, content type, headers), anything else gets a
404 that says why. Every request is counted per host for the report.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Dict, List, Optional

from aiohttp import web

from .scenario import HttpRule
from .wire import REROUTED_HEADER

_MAX_PATHS = 5


class HttpSink:
    def __init__(self, rules: List[HttpRule]):
        self.rules = rules
        # host -> {host, scheme, requests, static (answered by a rule), statuses {code: n}, paths (first 5)}
        self.hosts: Dict[str, Dict[str, Any]] = {}

    def rule_for(self, method: str, host: str, path: str) -> Optional[HttpRule]:
        bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        for rule in self.rules:
            if (fnmatch.fnmatchcase(host, rule.host) or fnmatch.fnmatchcase(bare, rule.host)) \
                    and fnmatch.fnmatchcase(path, rule.path) and rule.method in (None, method):
                return rule
        return None

    async def handle(self, request: web.Request) -> web.Response:
        host = (request.headers.get("Host") or "?").lower()
        scheme = request.headers.get(REROUTED_HEADER) or "http"
        if request.body_exists:
            await request.read()
        rule = self.rule_for(request.method, host, request.path)
        if rule is not None:
            resp = web.Response(status=rule.status, body=rule.body, headers=dict(rule.headers))
            resp.content_type = rule.content_type.split(";")[0].strip()
            if "charset=" in rule.content_type:
                resp.charset = rule.content_type.split("charset=", 1)[1].strip()
        else:
            resp = web.json_response(
                {"error": f"autoperf discord_sim: {host} is kept off the network during a simulation, and the "
                          "scenario gives no response for it (add one under http:)"}, status=404)
        self._record(host, scheme, request.method, request.path, resp.status, rule is not None)
        return resp

    def _record(self, host: str, scheme: str, method: str, path: str, status: int, static: bool) -> None:
        entry = self.hosts.setdefault(host, {"host": host, "scheme": scheme, "requests": 0, "static": 0,
                                             "statuses": {}, "paths": []})
        entry["requests"] += 1
        entry["static"] += static
        entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
        line = f"{method} {path}"
        if line not in entry["paths"] and len(entry["paths"]) < _MAX_PATHS:
            entry["paths"].append(line)
