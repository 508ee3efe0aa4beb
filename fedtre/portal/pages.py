"""How a page handler runs: session, CSRF on POST, blocking calls off the event loop,
and errors shown as pages with their HTTP status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from fedtre.errors import FedtreError, Unauthenticated
from fedtre.portal.web import Session, checked_form, error_page, redirect, session_of, set_cookie

Handler = Callable[[Request, Session, FormData | None], Response]


def page(handler: Handler, *, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint around handler(request, session, form): a signed-in session unless
    public (an anonymous visitor gets an empty one), the form checked for its CSRF token
    on POST, handler run in a worker thread (it calls the coordinator)."""

    async def endpoint(request: Request) -> Response:
        store = request.app.state.sessions
        session = session_of(request)
        try:
            form = await checked_form(request, session) if request.method == "POST" else None
        except FedtreError as exc:
            return error_page(request, session, exc)
        if (session is None or not session.signed_in) and not public:
            return signin_again(request)
        fresh = session is None
        if session is None:
            session = store.new()
        try:
            response = await run_in_threadpool(handler, request, session, form)
        except Unauthenticated:
            store.drop(session)
            return signin_again(request)
        except FedtreError as exc:
            return error_page(request, session, exc)
        if fresh:
            set_cookie(request, response, session)
        return response

    return endpoint


def signin_again(request: Request) -> Response:
    """To the sign-in page; for htmx's polling, the whole page goes there (not the swap)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"hx-redirect": "/signin"})
    return redirect("/signin")


def field(form: FormData | None, name: str, default: str = "") -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else default


def fields(form: FormData | None, name: str) -> list[str]:
    """A comma-separated field as a list ("a, b" -> ["a", "b"]), or a multi-select's values."""
    if form is None:
        return []
    values: list[Any] = form.getlist(name)
    return [
        part.strip() for v in values if isinstance(v, str) for part in v.split(",") if part.strip()
    ]
