"""What both web pages share: server-side sessions, CSRF, security headers, templates.

The portal (fedtre.portal.coordinator_app) and the TRE's page (fedtre.portal.tre_app)
keep each signed-in person's secret (an API token, or the TRE page's operator token)
server-side, in a SessionStore keyed by a random id; the cookie carries only that id
(Secure, HttpOnly, SameSite=Strict). Every form carries the session's CSRF token and
every POST is refused without it. Every response carries a Content-Security-Policy
that allows scripts and styles from the page's own origin only (no inline script or
style, no CDN): htmx is served from static/.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedtre.errors import (
    Conflict,
    DisclosureBlocked,
    FedtreError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from fedtre.portal import words

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.filters["cell"] = words.cell
TEMPLATES.env.filters["row_label"] = words.row_label
# JSON to read (Jinja's tojson escapes < > & for scripts; these are escaped as text instead)
TEMPLATES.env.filters["as_json"] = lambda value: json.dumps(value, sort_keys=True, default=str)

# The session cookie's name, per site (so the TRE's page and the portal on one host never
# overwrite each other's: cookies are per host, not per port).
PORTAL_COOKIE = "fedtre_portal_session"
TRE_COOKIE = "fedtre_tre_session"
IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 12 * 60 * 60  # however active, sign in again after a working day
MAX_SESSIONS = 10_000  # anonymous visitors get one too (for the sign-in form's CSRF token)

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # Ignored over plain HTTP; behind the TLS proxy (or with --tls-cert) it pins HTTPS.
    (b"strict-transport-security", b"max-age=31536000"),
]

# How each error reads as an HTTP status: the coordinator's refusal, shown as it is.
STATUS = [
    (NotFound, 404),
    (InvalidRequest, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (Conflict, 409),
    (DisclosureBlocked, 409),
    (Unavailable, 503),
]


@dataclass
class Session:
    """One browser's session: its CSRF token and, once signed in, who and their secret."""

    id: str
    csrf: str
    seen: float
    created: float
    user: str = ""
    role: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    # Closed when the session ends (e.g. the person's coordinator Client).
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return bool(self.user)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()


class SessionStore:
    """Sessions in memory, dropped after idle_seconds without a request, after max_age
    seconds in all, or on sign-out."""

    def __init__(
        self,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ):
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._idle = idle_seconds
        self._max_age = max_age
        self._max_sessions = max_sessions
        self._clock = clock

    def new(self) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), seen=now, created=now
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self._max_sessions:
                self._evict(keep=session)
        return session

    def _evict(self, keep: Session) -> None:
        """Drop the least recently used anonymous session, or if none, the least recently
        used one: anyone can open anonymous sessions by the thousand (one per request
        without a cookie), and that must not sign other people out."""
        sessions = self._sessions.values()
        victim = next((s for s in sessions if s is not keep and not s.signed_in), None)
        if victim is None:
            victim = next(s for s in sessions if s is not keep)
        del self._sessions[victim.id]
        victim.close()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen > self._idle or now - session.created > self._max_age:
                del self._sessions[session_id]
                session.close()
                return None
            session.seen = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        session.close()


class SecurityHeaders:
    """ASGI middleware: the CSP and friends on every response; no caching of pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def session_of(request: Request) -> Session | None:
    store: SessionStore = request.app.state.sessions
    return store.get(request.cookies.get(request.app.state.cookie))


def set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        request.app.state.cookie,
        session.id,
        httponly=True,
        secure=True,
        samesite="strict",
        path="/",
    )


def begin_session(request: Request, anonymous: Session, user: str, role: str) -> Session:
    """Sign in: drop the anonymous session and return a new one for user (a new id once
    signed in: no session fixation). The caller sets its cookie on the response."""
    store: SessionStore = request.app.state.sessions
    store.drop(anonymous)
    signed = store.new()
    signed.user, signed.role = user, role
    return signed


def signout(request: Request, session: Session, form: FormData | None) -> Response:
    """The sign-out page of both portals: end the session, back to sign-in."""
    response = redirect("/signin")
    end_session(request, response, session)
    return response


def end_session(request: Request, response: Response, session: Session) -> None:
    """Sign out: forget the session server-side and ask the browser to drop the cookie."""
    request.app.state.sessions.drop(session)
    response.delete_cookie(
        request.app.state.cookie, path="/", secure=True, httponly=True, samesite="strict"
    )


def render(
    request: Request, session: Session | None, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page; an anonymous visitor gets a session here so its forms carry a CSRF token."""
    fresh = session is None
    if session is None:
        session = request.app.state.sessions.new()
    response = TEMPLATES.TemplateResponse(
        request, template, {"session": session, **context}, status_code=status
    )
    if fresh:
        set_cookie(request, response, session)
    return response


async def checked_form(request: Request, session: Session | None) -> FormData:
    """The POSTed form, once its CSRF token matches the session's; PermissionDenied if not."""
    form = await request.form()
    sent = form.get("csrf")
    if session is None or not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
        raise PermissionDenied(
            "this form has expired or did not come from this site; reload the page and try again"
        )
    return form


def error_page(request: Request, session: Session | None, exc: FedtreError) -> HTMLResponse:
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
    return render(request, session, "error.html", status=status, message=str(exc))


def server_error(request: Request, exc: Exception) -> Response:
    """A failure no page handled: no details (the server's log has the traceback), and the
    headers every response carries, added here because Starlette sends this response
    from outside the middleware (SecurityHeaders never sees it)."""
    response = PlainTextResponse(
        "The page failed on the server; nothing was shown. Try again, or tell the "
        "portal's operator the time it happened.",
        status_code=500,
    )
    response.raw_headers.extend([*SECURITY_HEADERS, (b"cache-control", b"no-store")])
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def require_loopback_without_tls(host: str, tls: bool) -> None:
    """Plain HTTP only on loopback (behind a TLS-terminating proxy); elsewhere, TLS."""
    if tls:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidRequest(
            f"--listen {host} is not a loopback address: give --tls-cert and --tls-key to "
            "serve HTTPS there, or listen on 127.0.0.1 behind a TLS-terminating reverse proxy"
        )
