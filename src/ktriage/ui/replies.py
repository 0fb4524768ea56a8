"""The API's two reply shapes: ``{"ok": true, "result": …}`` and
``{"ok": false, "error": {"code", "message"}}`` (every failure, whatever its
status), with values made JSON-safe (ui/values.py)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from ktriage.ui.values import jsonable


def ok(result: Any) -> JSONResponse:
    return JSONResponse({"ok": True, "result": jsonable(result)})


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status_code=status)
