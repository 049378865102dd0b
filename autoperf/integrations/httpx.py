"""httpx client: one ``http`` span per request, sync (``Client.send``) and async (``AsyncClient.send``).

``send`` is where every request goes (``get``/``post``/``request``/``stream`` build a Request and
call it; redirects are followed inside it), so one span per call, covering redirects and — unless
``stream=True`` — reading the body. Attributes, naming, suppression and privacy rules are those
of the aiohttp integration (``autoperf.integrations.aiohttp``): ``method``, ``host``, templated
``path`` without query string, ``status``, ``bytes`` (Content-Length, else the bytes downloaded);
never headers, query strings or userinfo. ``traceparent`` is sent as by the aiohttp integration
(set on the request's headers unless it has one; option ``traceparent``).
"""
from __future__ import annotations

from autoperf import diagnostics
from autoperf.config.schema import Obj
from autoperf.integrations import aiohttp as _aiohttp
from autoperf.integrations.aiohttp import TRACEPARENT, end_http_span, should_record, start_http_span

OPTIONS = Obj({"traceparent": TRACEPARENT}, doc="httpx client requests (http spans).")
_options = {"traceparent": True}


def _start(request):
    url = request.url
    s = start_http_span(request.method, url.host, url.port, url.scheme, url.path)
    if _options["traceparent"] and "traceparent" not in request.headers:
        try:
            value = _aiohttp.traceparent_for(s, url.host)
            if value is not None:
                request.headers["traceparent"] = value
        except Exception as exc:
            diagnostics.internal_error("httpx traceparent", exc)
    return s


def _size(response):
    length = response.headers.get("content-length")
    if length is not None and length.isdigit():
        return int(length)
    downloaded = getattr(response, "num_bytes_downloaded", 0)
    return downloaded or None


def _end(s, response):
    try:
        end_http_span(s, response.status_code, _size(response))
    except Exception as exc:
        diagnostics.internal_error("httpx response attributes", exc)


def _sync_factory(original):
    def send(self, request, **kwargs):
        if not should_record():
            return original(self, request, **kwargs)
        try:
            s = _start(request)
        except Exception:
            return original(self, request, **kwargs)
        try:
            response = original(self, request, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            s.finish()
            raise
        _end(s, response)
        s.finish()
        return response
    return send


# The same steps as _sync_factory's: a coroutine function and a plain one cannot share a body.
def _async_factory(original):
    async def send(self, request, **kwargs):
        if not should_record():
            return await original(self, request, **kwargs)
        try:
            s = _start(request)
        except Exception:
            return await original(self, request, **kwargs)
        try:
            response = await original(self, request, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            s.finish()
            raise
        _end(s, response)
        s.finish()
        return response
    return send


def setup(module, options: dict) -> None:
    _options["traceparent"] = bool(options.get("traceparent", True))
