"""The dashboard's web application: the page, its static files and the JSON API, all GET-only.

Starlette answers every other method with 405, so nothing on the page, nor any request, can
submit a run or change the consortium. With ``token`` set (a dashboard bound beyond loopback) every
request must carry it: as ``Authorization: Bearer``, or once as ``?token=`` in the address a
person opens, after which an HttpOnly cookie carries it for the page's own API calls.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from common.errors import InsiteError
from deploy.coordinator.dashboard import api
from deploy.coordinator.dashboard.source import DashboardSource

STATIC = Path(str(resources.files("deploy.coordinator.dashboard") / "static"))
COOKIE = "insite_dashboard"
#: The page polls the API this often; the browser test and the README quote it.
REFRESH_S = 2.0

#: The API, as ``GET /api`` lists it (and the README documents it).
ENDPOINTS = {
    "/api": "this list",
    "/api/overview": "consortium name, the latest run's name, the page's refresh interval",
    "/api/sites": "registered sites: online (SuperLink heartbeat), last seen, key fingerprint, app digest, versions",
    "/api/runs": "the run history, newest first: status, state line, rounds, final global Dice, evaluations",
    "/api/runs/{name}": "one run: record, current phase, every closed round's row, its Flower runs (app, bytes)",
    "/api/current": "the latest run, as /api/runs/{name}",
    "/api/publication": "each shared-assets manifest: per-asset decision, approving sites, sites awaited",
    "/api/statistics": "the latest sites' data statistics ('insite coord stats'), side by side",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class TokenGate(BaseHTTPMiddleware):
    """401 for a request without the dashboard's token; constant-time comparison."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token.encode()

    def _matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if self._matches(bearer) or self._matches(request.cookies.get(COOKIE)):
            return await call_next(request)
        if self._matches(request.query_params.get("token")):
            # Out of the address bar (and the browser's history) into a cookie the page's script cannot read.
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, self.token.decode(), httponly=True, secure=True, samesite="strict")
            return response
        message = "the dashboard needs its login token: open the address 'insite coord dashboard --token' prints"
        if request.url.path.startswith("/api"):
            return JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return PlainTextResponse(message, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response


def create_app(source: DashboardSource, token: str | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """The dashboard over ``source``; ``token`` (required beyond loopback) guards every request."""

    def answer(build: Callable[[], dict[str, Any] | None]) -> Response:
        try:
            body = build()
        except InsiteError as error:  # e.g. the SuperLink's database is locked or of another schema
            return JSONResponse({"error": str(error)}, status_code=503)
        if body is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        return JSONResponse(body)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def endpoints(request: Request) -> Response:
        return JSONResponse({"endpoints": ENDPOINTS, "read_only": True})

    async def overview(request: Request) -> Response:
        return answer(
            lambda: {
                "consortium": source.name,
                "latest_run": api.latest_run_name(source),
                "refresh_s": REFRESH_S,
                "time": clock(),
            }
        )

    async def sites(request: Request) -> Response:
        return answer(lambda: api.sites(source, clock()))

    async def runs(request: Request) -> Response:
        return answer(lambda: api.runs(source, clock()))

    async def one_run(request: Request) -> Response:
        return answer(lambda: api.run(source, request.path_params["name"], clock()))

    async def current(request: Request) -> Response:
        latest = api.latest_run_name(source)
        return answer(lambda: None if latest is None else api.run(source, latest, clock()))

    async def publication(request: Request) -> Response:
        return answer(lambda: api.publication(source))

    async def statistics(request: Request) -> Response:
        return answer(lambda: api.statistics(source))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api", endpoints, methods=["GET"]),
        Route("/api/overview", overview, methods=["GET"]),
        Route("/api/sites", sites, methods=["GET"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/runs/{name}", one_run, methods=["GET"]),
        Route("/api/current", current, methods=["GET"]),
        Route("/api/publication", publication, methods=["GET"]),
        Route("/api/statistics", statistics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if token is not None:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware)
