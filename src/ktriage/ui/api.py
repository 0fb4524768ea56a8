"""The triage UI's JSON API (read-only) and the page itself, as one ASGI app.

Every reply is ``{"ok": true, "result": …}`` or ``{"ok": false, "error":
{"code", "message"}}`` with a 4xx status — one error shape, pinned by a test.
Only GET is served; any other method is refused. Each request opens its own
read-only connection, so the UI works on a database a recorder is writing.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ktriage.render.preview import Preview
from ktriage.store.access import DB_ERRORS, ReadOnly, open_readonly
from ktriage.ui import queries

SQL_TIME_LIMIT_S = 3.0
SQL_ROW_LIMIT = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status_code=status)


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"ok": True, "result": result})


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer, not {value!r}") from None


class Api:
    def __init__(self, db: str) -> None:
        self.db = db
        self.preview = Preview(colour=False)

    def _open(self) -> ReadOnly:
        return open_readonly(self.db)

    def detections(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            return queries.detections(db, min_severity=_int(request, "min_severity", 1),
                                      name=request.query_params.get("name") or None,
                                      host=request.query_params.get("host") or None, pid=_int(request, "pid"),
                                      since=_int(request, "since"), until=_int(request, "until"),
                                      limit=min(_int(request, "limit", 200) or 200, 1000))

    def detection(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            det = queries.event_by_id(db, request.query_params.get("id", ""))
            if det is None or det["family"] != "detection":
                raise ApiError(404, "not_found", f"no detection {request.query_params.get('id')!r}")
            chain = [queries.event_by_id(db, i) for i in json.loads(det.get("event_ids") or "[]")]
            labels = dict((eid, label) for label, eid in json.loads(det.get("evidence") or "[]"))
            return {"detection": det, "chain": [
                {"id": queries.eid(ev), "label": labels.get(queries.eid(ev)), "event": ev,
                 "preview": self.preview.render(ev).strip("\n")} for ev in chain if ev is not None]}

    def event(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            ev = queries.event_by_id(db, request.query_params.get("id", ""))
            if ev is None:
                raise ApiError(404, "not_found", f"no event {request.query_params.get('id')!r}")
            return {"event": ev, "preview": self.preview.render(ev).strip("\n")}

    def process(self, request: Request) -> Any:
        pid = _int(request, "pid")
        if pid is None:
            raise ApiError(400, "bad_parameter", "pid is required")
        with queries.connection(self._open()) as db:
            return queries.process_view(db, request.query_params.get("host") or None, pid)

    def search(self, request: Request) -> Any:
        text = request.query_params.get("q", "").strip()
        if len(text) < 2:
            raise ApiError(400, "bad_parameter", "search needs at least 2 characters")
        with queries.connection(self._open()) as db:
            return queries.search(db, text)

    def sql(self, request: Request) -> Any:
        text = request.query_params.get("q", "").strip()
        if not text:
            raise ApiError(400, "bad_parameter", "q (the SQL) is required")
        with queries.connection(self._open()) as db:
            return queries.run_sql(db, text, SQL_TIME_LIMIT_S, SQL_ROW_LIMIT)

    def meta(self, request: Request) -> Any:
        with queries.connection(self._open()) as db:
            return queries.meta(db)


def _endpoint(method: Any) -> Any:
    async def handle(request: Request) -> Response:
        started = time.monotonic()
        try:
            result = await run_in_threadpool(method, request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except DB_ERRORS as exc:
            return _error(400, "query_failed", str(exc).strip().splitlines()[0])
        response = _ok(result)
        response.headers["X-Elapsed-Ms"] = f"{(time.monotonic() - started) * 1000:.1f}"
        return response
    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = "read-only API: only GET" if exc.status_code == 405 else str(exc.detail)
    return _error(exc.status_code, code, message)


def create_app(db: str) -> Starlette:
    api = Api(db)
    static = resources.files("ktriage.ui") / "static"
    routes = [Route(f"/api/{name}", _endpoint(getattr(api, name)), methods=["GET"])
              for name in ("detections", "detection", "event", "process", "search", "sql", "meta")]
    routes.append(Mount("/", StaticFiles(directory=str(static), html=True)))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
