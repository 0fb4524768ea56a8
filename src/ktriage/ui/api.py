"""The triage UI's JSON API (read-only) and the page itself, as one ASGI app.

Every reply is ``{"ok": true, "result": …}`` or ``{"ok": false, "error":
{"code", "message"}}`` — every failure, whatever its status: bad parameters,
404/405, refused hosts and tokens (ui/guard.py), failed SQL, and any
unexpected exception (logged with its traceback, answered 500). Only GET is
served and no request changes anything. Each request opens its own read-only
connection, so the UI works on a database a recorder is writing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ktriage.errors import ReadStopped, StoreError
from ktriage.render.preview import Preview
from ktriage.store import reads
from ktriage.store.access import DB_ERRORS
from ktriage.store.readonly import ReadOnly, open_readonly
from ktriage.ui import queries, sqlbox
from ktriage.ui.guard import RequestGuard, allowed_hosts
from ktriage.ui.replies import error, ok
from ktriage.ui.values import lenient_text

log = logging.getLogger(__name__)
SQL_LIMITS = sqlbox.SqlLimits()
SQL_AT_ONCE = 2  # SQL box statements running at the same time; more are told to wait
API_TIME_LIMIT_S = 10.0  # the other endpoints' fixed queries
INT64 = (-(1 << 63), (1 << 63) - 1)
TEXT_LIMIT = 1000
SEARCH_LIMITS = (2, 200)
ENDPOINTS = ("detections", "detection", "event", "process", "search", "sql", "meta")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)


def _text(request: Request, name: str, limit: int = TEXT_LIMIT) -> str:
    value = request.query_params.get(name, "")
    if len(value) > limit:
        raise _bad(f"{name} is {len(value)} characters long; the limit is {limit}")
    if "\0" in value:
        raise _bad(f"{name} contains a NUL character")
    return value


def _int(request: Request, name: str, default: int | None = None, low: int = INT64[0],
         high: int = INT64[1]) -> int | None:
    value = _text(request, name, 40)
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise _bad(f"{name} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise _bad(f"{name} must be between {low} and {high}, not {number}")
    return number


class Api:
    def __init__(self, db: str) -> None:
        self.db = db
        self.preview = Preview(colour=False)
        self._sql_slots = threading.BoundedSemaphore(SQL_AT_ONCE)

    def _open(self) -> ReadOnly:
        db = open_readonly(self.db, API_TIME_LIMIT_S)
        if not db.postgres:
            db.conn.text_factory = lenient_text
        return db

    def detections(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            which = reads.DetectionFilter(
                min_severity=_int(request, "min_severity", 1, 0, 100), name=_text(request, "name") or None,
                host=_text(request, "host") or None, pid=_int(request, "pid"), since=_int(request, "since"),
                until=_int(request, "until"))
            return queries.detections(db, which, limit=_int(request, "limit", 200, 1, 1000))

    def detection(self, request: Request) -> Any:
        ident = _text(request, "id")
        with queries.connection(self._open()) as db:
            det = queries.event_by_id(db, ident)
            if det is None or det["family"] != "detection":
                raise ApiError(404, "not_found", f"no detection {ident!r}")
            chain = [queries.event_by_id(db, i) for i in json.loads(det.get("event_ids") or "[]")]
            labels = dict((eid, label) for label, eid in json.loads(det.get("evidence") or "[]"))
            return {"detection": det, "chain": [
                {"id": queries.eid(ev), "label": labels.get(queries.eid(ev)), "event": ev,
                 "preview": self.preview.render(ev).strip("\n")} for ev in chain if ev is not None]}

    def event(self, request: Request) -> Any:
        ident = _text(request, "id")
        with queries.connection(self._open()) as db:
            ev = queries.event_by_id(db, ident)
            if ev is None:
                raise ApiError(404, "not_found", f"no event {ident!r}")
            return {"event": ev, "preview": self.preview.render(ev).strip("\n")}

    def process(self, request: Request) -> Any:
        pid = _int(request, "pid")
        if pid is None:
            raise _bad("pid is required")
        with queries.connection(self._open()) as db:
            return queries.process_view(db, _text(request, "host") or None, pid)

    def search(self, request: Request) -> Any:
        text = _text(request, "q", 10 * SEARCH_LIMITS[1]).strip()
        if not SEARCH_LIMITS[0] <= len(text) <= SEARCH_LIMITS[1]:
            raise _bad(f"search needs {SEARCH_LIMITS[0]} to {SEARCH_LIMITS[1]} characters, not {len(text)}")
        with queries.connection(self._open()) as db:
            return queries.search(db, text)

    def sql(self, request: Request) -> Any:
        text = _text(request, "q", SQL_LIMITS.sql_chars).strip()
        if not text:
            raise _bad("q (the SQL) is required")
        if not self._sql_slots.acquire(blocking=False):
            raise ApiError(503, "busy", f"{SQL_AT_ONCE} SQL box queries are already running; try again")
        try:
            with queries.connection(self._open()) as db:
                return sqlbox.run_sql(db, text, SQL_LIMITS)
        finally:
            self._sql_slots.release()

    def meta(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            return queries.meta(db)


def _failure(exc: Exception) -> Response:
    """The reply for an exception an endpoint raised; an unexpected one is logged with its traceback."""
    if isinstance(exc, ApiError):
        return error(exc.status, exc.code, exc.message)
    if isinstance(exc, sqlbox.SqlRefused):
        return error(403, "sql_disabled", str(exc))
    if isinstance(exc, sqlbox.SqlFailed):
        return error(400, "query_failed", str(exc))
    if isinstance(exc, ReadStopped):
        return error(400, "query_failed", str(exc))
    if isinstance(exc, DB_ERRORS):
        return error(400, "query_failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, StoreError):
        return error(503, "store_unavailable", str(exc))
    log.error("internal error in the UI API", exc_info=exc)
    return error(500, "internal_error", f"internal error ({type(exc).__name__}); its traceback is in the UI's log")


def _endpoint(method: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        started = time.monotonic()
        try:
            response = ok(await run_in_threadpool(method, request))
        except Exception as exc:  # every failure becomes the error shape; an unexpected one is logged
            return _failure(exc)
        response.headers["X-Elapsed-Ms"] = f"{(time.monotonic() - started) * 1000:.1f}"
        return response
    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = "read-only API: only GET" if exc.status_code == 405 else str(exc.detail)
    return error(exc.status_code, code, message)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _failure(exc)


def create_app(db: str, token: str, port: int, listen_host: str = "127.0.0.1", api: Api | None = None) -> Starlette:
    """The UI for db, answering only on listen_host:port and only API calls that carry token."""
    api = api or Api(db)
    static = resources.files("ktriage.ui") / "static"
    routes = [Route(f"/api/{name}", _endpoint(getattr(api, name)), methods=["GET"]) for name in ENDPOINTS]
    routes.append(Mount("/", StaticFiles(directory=str(static), html=True)))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error},
                     middleware=[Middleware(RequestGuard, token=token, hosts=allowed_hosts(listen_host, port))])
