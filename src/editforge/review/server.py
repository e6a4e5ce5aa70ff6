"""The review web app: a static page (static/) and a small JSON API over a `ReviewSession`.

    GET  /                          the page
    GET  /api/state                 summary, waiting changes, and `version`: what the page polls
    GET  /api/rows                  one page of the rows to review, with the state and the choices:
                                    filters `status`, `mode` (values), `contrast_min`, `change_max` ...
                                    (any number field of index.FIELDS, `_min`/`_max`); `sort` a field,
                                    `-field` descending; the page holding row `around`, the one after
                                    row `after` or before row `before`, else from `offset`; `limit` rows
    GET  /api/rows/{row}            one row with the generation parameters stored in its PNG
    POST /api/rows/{row}/verdict    {"verdict": "accepted" | "rejected" | "", "seen": {images}, "row_id"}
    POST /api/rows/{row}/regenerate {"seen": {images}, "row_id"}
    POST /api/export                {"format", "out", "model_family"}: accepted rows -> dataset exporter,
                                    `out` a folder under the export dir named when the app started
    GET  /files/{path}              an image under the base dir (see files.py)

Only the page the app served can drive it: every request needs the app's token (access.py), the
Host header must name this server (a DNS-rebinding page cannot), changes must come from this
origin and be JSON POSTs (a form on another site cannot send one without CORS, which is off).

The browser never holds more than a page of rows: it polls /api/state every few seconds and fetches
its page again only when `version` changed. Filters, counts and sorting are done here, over the
row index (index.py), so neither a poll nor a click costs a pass over the sheet.
"""

from __future__ import annotations

import socket
from dataclasses import asdict
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from editforge.errors import EditForgeError
from editforge.review.access import TokenGate, new_token
from editforge.review.export import DEFAULT_FAMILY, FAMILIES, FORMATS, export_accepted
from editforge.review.files import Refused, confined_file, file_url
from editforge.review.session import Conflict, ReviewSession
from editforge.review.index import FIELDS, Query
from editforge.review.rows import MODES, STATUSES, RowView, png_params

STATIC = Path(__file__).with_name("static")
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
PAGE_SIZE = 100       # rows per page the browser holds
MAX_PAGE_SIZE = 1000  # the most a `limit` may ask for
# the page's sort choices: every number field, both ways ("-" first: descending)
SORTS = [(f"{sign}{name}", f"{spec.label} {arrow}") for name, spec in FIELDS.items() if spec.choices is None
         for sign, arrow in (("", "↑"), ("-", "↓"))]


def create_app(session: ReviewSession, *, token: str, host: str = "127.0.0.1",
               page_size: int = PAGE_SIZE) -> Starlette:
    def row_json(row: RowView | None) -> dict | None:
        if row is None:
            return None
        rel = {k: session.relative(v) for k, v in row.images.items()}
        return {**asdict(row), "status": row.status,
                "urls": {k: file_url(r) if r is not None else None for k, r in rel.items()}}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def current_state(request: Request) -> Response:
        return JSONResponse(session.state())

    def rows(request: Request) -> Response:
        params = request.query_params
        limit = min(max(_whole(params, "limit") or page_size, 1), MAX_PAGE_SIZE)
        anchors = {name: _whole(params, name) for name in ("around", "after", "before")}
        page = session.view().page(_query(params), limit=limit, offset=_whole(params, "offset") or 0, **anchors)
        return JSONResponse({
            "workbook": session.workbook.name, "sheet": session.sheet, "rows": [row_json(r) for r in page.rows],
            "offset": page.offset, "total": page.total, "focus": page.focus, "page_size": limit,
            "statuses": STATUSES, "modes": MODES, "sorts": SORTS, "formats": FORMATS, "families": FAMILIES,
            **session.state(),
        })

    def one_row(request: Request) -> Response:
        number = request.path_params["row"]
        row = session.view().row(number)
        if row is None:
            return _error(404, f"row {number} has no pictures to review")
        params = {}
        rel = session.relative(row.images[row.generated]) if row.generated else None
        if rel is not None:
            params = png_params(session.base / rel)
        return JSONResponse({"row": row_json(row), "params": params})

    async def verdict(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        number = request.path_params["row"]
        return await _act(lambda: {"row": row_json(session.verdict(number, str(body.get("verdict") or ""),
                                                                   seen=body.get("seen") or {},
                                                                   row_id=body.get("row_id"))), **session.state()})

    async def regenerate(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        number = request.path_params["row"]

        def run():
            row, moved = session.regenerate(number, seen=body.get("seen") or {}, row_id=body.get("row_id"))
            return {"row": row_json(row), "moved_to": moved.relative_to(session.base).as_posix() if moved else None,
                    **session.state()}
        return await _act(run)

    async def export(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        family = str(body.get("model_family") or DEFAULT_FAMILY)
        return await _act(lambda: export_accepted(session, str(body.get("format") or ""), str(body.get("out") or ""),
                                                  model_family=family))

    def files(request: Request) -> Response:
        try:
            path = confined_file(session.base, request.path_params["path"])
        except Refused:
            return _error(403, "refused: only images under the base dir are served")
        except FileNotFoundError:
            return _error(404, "no such image")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", index),
        Route("/api/state", current_state),
        Route("/api/rows", rows),
        Route("/api/rows/{row:int}", one_row),
        Route("/api/rows/{row:int}/verdict", verdict, methods=["POST"]),
        Route("/api/rows/{row:int}/regenerate", regenerate, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/files/{path:path}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    wildcard = host in ("0.0.0.0", "::", "")  # bound to every interface: any name may reach it
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=["*"] if wildcard else [*LOCAL_HOSTS, host]),
                  Middleware(TokenGate, token=token)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={EditForgeError: _user_error})


def _query(params) -> Query:
    """The filters and the order a request names (see the module docstring)."""
    filters = {}
    for name, spec in FIELDS.items():
        if spec.choices is not None:
            if params.get(name):
                filters[name] = params[name]
        else:
            low, high = _number(params, f"{name}_min"), _number(params, f"{name}_max")
            if low is not None or high is not None:
                filters[name] = (low, high)
    sort = params.get("sort") or "row"
    return Query(filters, sort=sort.removeprefix("-"), descending=sort.startswith("-"))


def _number(params, name: str) -> float | None:
    text = params.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise EditForgeError(f"{name} must be a number, not {text!r}") from None


def _whole(params, name: str) -> int | None:
    value = _number(params, name)
    return None if value is None else int(value)


async def _json_body(request: Request) -> dict | Response:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return _error(415, "send JSON")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body is not valid JSON")
    return body if isinstance(body, dict) else _error(400, "the body must be a JSON object")


async def _act(action) -> Response:
    # off the event loop: file moves, sqlite and workbook reads block
    return JSONResponse(await run_in_threadpool(action))


async def _user_error(request: Request, exc: Exception) -> Response:
    return _error(409 if isinstance(exc, Conflict) else 400, str(exc))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ReviewServer:
    """The app bound to `host:port` (0: any free port). Binding first makes a taken port a one-line
    error before anything starts, and tells the real port for `url` (which carries the token)."""

    def __init__(self, session: ReviewSession, *, host: str = "127.0.0.1", port: int = 7860,
                 token: str | None = None, page_size: int = PAGE_SIZE):
        self.session = session
        self.token = token or new_token()
        self.socket = _bind(host, port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        self.url = f"http://{shown}:{self.socket.getsockname()[1]}/?token={self.token}"
        config = uvicorn.Config(create_app(session, token=self.token, host=host, page_size=page_size), log_level="warning",
                                access_log=False)
        self.server = _Server(config)

    def run(self) -> None:
        """Serve until Ctrl-C or `stop()`, then write what is still queued; a Ctrl-C (or SIGTERM) ends in
        KeyboardInterrupt once that is done."""
        self.session.start()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()
            self.session.close()
        if self.server.signalled:  # uvicorn re-raises the signal itself, but asyncio may swallow it at shutdown
            raise KeyboardInterrupt

    def stop(self) -> None:
        self.server.should_exit = True


class _Server(uvicorn.Server):
    """uvicorn's server, remembering that a signal stopped it: uvicorn shuts down and raises the signal again,
    which asyncio's runner turns into a cancelled task, then KeyboardInterrupt, unless the task ends first."""

    signalled = False

    def handle_exit(self, sig, frame) -> None:
        self.signalled = True
        super().handle_exit(sig, frame)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets (else: 40 ms per kept-alive answer)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise EditForgeError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another `port`") from None
    sock.listen(128)
    return sock
