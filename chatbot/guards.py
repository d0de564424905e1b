"""What the web server refuses before a request reaches the app, each found by an outside
security trial of the page: requests addressed to another host name (DNS rebinding), large
bodies, uploads when they are off, and forwarded client addresses nobody vouches for."""
from __future__ import annotations

import ipaddress
import os

from chatbot.config import Settings

UPLOAD_PATH = "/gradio_api/upload"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`; a host name other than localhost may not be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trust_no_forwarded_address() -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: anyone on this
    machine could pose as any address, dodge the upload lockout and forge the audit log. An
    operator behind a proxy names it in FORWARDED_ALLOW_IPS (uvicorn's variable)."""
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")


async def _refuse(send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _is_upload(scope) -> bool:
    return scope["path"].rstrip("/").endswith(UPLOAD_PATH)


class NoUploadRoute:
    """Without uploads Gradio's upload route still stored an empty file for every empty upload
    a client sent: it answers 404."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _is_upload(scope):
            return await _refuse(send, 404)
        await self.app(scope, receive, send)


class BodyLimit:
    """Requests other than uploads are small (a question has at most max_question_chars): a
    larger declared body is refused before it is read (the trial sent 10 MB questions)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _is_upload(scope):
            size = dict(scope["headers"]).get(b"content-length", b"0")
            if not size.isdigit() or int(size) > self.limit:
                return await _refuse(send, 413)
        await self.app(scope, receive, send)


def middleware(host: str, uploads: bool, settings: Settings) -> list:
    """The server's middleware. On a loopback address it answers only requests addressed to
    it: a web page the user opens could otherwise reach it through a name of its own that
    resolves to 127.0.0.1 (DNS rebinding; the trial's `Host: attacker.example` got answers)."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    out = [Middleware(BodyLimit, limit=int(settings.max_request_mb * 1e6))]
    out += [] if uploads else [Middleware(NoUploadRoute)]
    if is_loopback(host):
        names = ["127.0.0.1", "localhost", "[::1]", "::1", host]
        out.append(Middleware(TrustedHostMiddleware, allowed_hosts=names))
    return out
