"""Who may talk to the UI: an ASGI middleware in front of everything.

- Host (and Origin, when sent) must name the address the UI listens on, so a
  page on evil.example that rebinds its name to 127.0.0.1 is refused (403).
- Every /api/ call carries the per-start token in the ``X-Ktriage-Token``
  header (401 otherwise). A page of another origin cannot set that header
  without a CORS preflight, which gets no CORS headers; a cookie or a query
  string is never accepted, so an ``<img src>`` or a link cannot carry it.
- The static page is served without the token: it is the same public file for
  everyone and holds no data; requiring the token there would put it in every
  asset URL or in a cookie, which is what the header keeps out.
- Every reply says: no referrer, no framing, no sniffing, no caching of /api.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ktriage.ui.replies import error

TOKEN_HEADER = "x-ktriage-token"
_NAMES = {"127.0.0.1": ("127.0.0.1", "localhost"), "localhost": ("localhost", "127.0.0.1"),
          "::1": ("[::1]", "localhost")}
SECURITY_HEADERS = {
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


def allowed_hosts(listen_host: str, port: int) -> frozenset[str]:
    """The Host header values that name this listener (the port may be left out only when it is 80)."""
    names = _NAMES[listen_host]
    hosts = {f"{name}:{port}" for name in names}
    return frozenset(hosts | set(names) if port == 80 else hosts)


class RequestGuard:
    def __init__(self, app: ASGIApp, token: str, hosts: frozenset[str]) -> None:
        self.app, self.token, self.hosts = app, token.encode(), hosts
        self.origins = frozenset(f"http://{h}" for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        api = _is_api(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if api:
                    headers["cache-control"] = "no-store"
            await send(message)

        if refused is not None:
            await refused(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        if host not in self.hosts or (origin is not None and origin.lower() not in self.origins):
            return error(403, "forbidden_host", f"the UI answers only requests to {sorted(self.hosts)[0]} "
                         f"(Host {host or 'missing'!r}, Origin {origin!r}): a page of another site cannot read it")
        if _is_api(scope["path"]) and not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token):
            return error(401, "unauthorized", "this API needs the X-Ktriage-Token header: open the URL that "
                         "`ktriage ui` printed (it ends in ?token=…)")
        return None


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")
