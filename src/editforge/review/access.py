"""Who may use the review app: whoever holds its token, from the page the app served.

- The app starts with a random token, printed in its address (`http://127.0.0.1:7860/?token=...`, as
  Jupyter does). A visit with the token sets an HttpOnly, SameSite=Strict cookie (one per port);
  every request needs that cookie or the `token` query parameter. Without either: 403.
- A state-changing request (anything but GET/HEAD) whose Origin (or, without one, Referer) names
  another site than this app is refused, even with the cookie. Browsers always send Origin with a
  POST, so a page on another site cannot act through a reviewer's browser.
- The Host header must name this server (TrustedHostMiddleware in server.py): a DNS-rebinding page
  cannot reach it under another name.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, urlsplit

SAFE_METHODS = ("GET", "HEAD")


def new_token() -> str:
    return secrets.token_urlsafe(18)


class TokenGate:
    """ASGI middleware: the rules above, in front of every route (static files and images included)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        cookie_name = f"editforge_review_{scope['server'][1] if scope.get('server') else ''}"
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookie = _cookies(headers.get("cookie", "")).get(cookie_name, "")
        if not (secrets.compare_digest(given, self.token) or secrets.compare_digest(cookie, self.token)):
            return await _refuse(send, "refused: open the address `editforge review` printed (it carries the token)")
        if scope["method"] not in SAFE_METHODS and not _same_origin(headers):
            return await _refuse(send, "refused: a change must come from the review page itself")
        if given and cookie != self.token:
            send = _setting_cookie(send, f"{cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/")
        await self.app(scope, receive, send)


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";") if "=" in part)
    return {name: value for name, _, value in pairs}


def _same_origin(headers: dict[str, str]) -> bool:
    """Origin, else Referer, must name the host the request was sent to; neither: not a browser."""
    source = headers.get("origin") or headers.get("referer")
    if source is None:
        return True
    return urlsplit(source).netloc.lower() == headers.get("host", "").lower()


def _setting_cookie(send, cookie: str):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode("latin-1"))]
        await send(message)
    return wrapped


async def _refuse(send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
