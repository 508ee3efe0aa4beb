"""`fedtre agent portal`: the TRE's own page, served inside the TRE beside its agent.

It reads and writes the agent's state database directly, as `fedtre agent inbox` does:
the output checker's airlock (held outputs with their exact values and every rule, to
release or deny), the operator's inbox (projects and jobs waiting for this TRE's
approval), and the agent's status. It never talks to the coordinator, and the
coordinator cannot reach it: it listens on loopback (or the TRE's own network).

Sign-in: the operator creates a portal token file (`fedtre agent portal --config ...`
writes one, 0600, on first start); a checker signs in with their name and that token.
The name is recorded with every decision, as `--checker` is in the CLI.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fedtre.cli import inbox_requests
from fedtre.cli.inbox import review_frame
from fedtre.errors import InvalidRequest, PermissionDenied
from fedtre.files import open_private
from fedtre.portal.pages import field, page
from fedtre.portal.web import (
    STATIC_DIR,
    TRE_COOKIE,
    SecurityHeaders,
    Session,
    SessionStore,
    begin_session,
    redirect,
    render,
    server_error,
    set_cookie,
    signout,
)

MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True)
class TrePortalConfig:
    """agent_config: the agent's TOML; token_file: the portal's sign-in token."""

    agent_config: Path
    token_file: Path


def ensure_token(path: Path) -> bool:
    """Create the sign-in token file (0600) if missing; True when it was created."""
    if path.exists():
        return False
    with open_private(path, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return True


def read_token(path: Path) -> str:
    """The sign-in token; InvalidRequest if the file is empty or others may read it (anyone
    who can read it can release held outputs)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InvalidRequest(
            f"the page's token file {path} is readable by others (mode {mode:o}); "
            f"run: chmod 600 {path}"
        )
    token = path.read_text().strip()
    if not token:
        raise InvalidRequest(f"{path} is empty; delete it and start again for a new one")
    return token


def create_app(config: TrePortalConfig, sessions: SessionStore | None = None) -> Starlette:
    from node_agent.airlock import Airlock
    from node_agent.approvals import OperatorApprovals
    from node_agent.config import load_config
    from node_agent.state import AgentState

    expected = read_token(config.token_file)
    agent = load_config(config.agent_config)
    state = AgentState(agent.state_db)

    def signin_form(request: Request, session: Session, form: FormData | None) -> Response:
        return render(request, session, "tre/signin.html", node=agent.node_id)

    def signin(request: Request, session: Session, form: FormData | None) -> Response:
        name, token = field(form, "name"), field(form, "token")
        upload = form.get("token_file") if form is not None else None
        if not token and isinstance(upload, UploadFile):
            token = upload.file.read(MAX_TOKEN_BYTES).decode("utf-8", "replace").strip()
        if not name:
            raise InvalidRequest("give your name: it is recorded with each decision you make")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise PermissionDenied("that is not this TRE page's token; ask the TRE's operator")
        signed = begin_session(request, session, name, "checker")
        response = redirect("/")
        set_cookie(request, response, signed)
        return response

    def status(request: Request, session: Session, form: FormData | None) -> Response:
        pause = state.paused()
        return render(
            request,
            session,
            "tre/status.html",
            node=agent.node_id,
            coordinator=agent.coordinator,
            datasets=sorted(agent.datasets),
            pause=pause,
            released=state.released_count(),
            held=len(state.reviews(pending_only=True)),
            waiting=len(OperatorApprovals(state).requests(pending_only=True)),
        )

    def airlock(request: Request, session: Session, form: FormData | None) -> Response:
        reviews = Airlock(state).list(pending_only=False)
        reviews.sort(key=lambda r: (not r.pending, r.held_at))
        return render(request, session, "tre/airlock.html", node=agent.node_id, reviews=reviews)

    def review(request: Request, session: Session, form: FormData | None) -> Response:
        found = Airlock(state).show(request.path_params["task"])
        return render(
            request,
            session,
            "tre/review.html",
            node=agent.node_id,
            review=found,
            frame=review_frame(found),
            payload=json.dumps(found.candidate.payload, indent=2, sort_keys=True),
        )

    def decide_review(request: Request, session: Session, form: FormData | None) -> Response:
        task = request.path_params["task"]
        action, reason = field(form, "action"), field(form, "reason")
        if action == "release":
            Airlock(state).approve(task, checker=session.user, reason=reason)
        elif action == "deny":
            Airlock(state).deny(task, checker=session.user, reason=reason)
        else:
            raise InvalidRequest("choose release or deny")
        return redirect(f"/airlock/{task}")

    def requests(request: Request, session: Session, form: FormData | None) -> Response:
        found = OperatorApprovals(state).requests(pending_only=False)
        return render(request, session, "tre/requests.html", node=agent.node_id, requests=found)

    def one_request(request: Request, session: Session, form: FormData | None) -> Response:
        found = OperatorApprovals(state).request(request.path_params["id"])
        return render(
            request,
            session,
            "tre/request.html",
            node=agent.node_id,
            request_=found,
            lines=inbox_requests.show_lines(found),
        )

    def decide_request(request: Request, session: Session, form: FormData | None) -> Response:
        ident = request.path_params["id"]
        action = field(form, "action")
        if action not in ("approve", "deny"):
            raise InvalidRequest("choose approve or deny")
        inbox_requests.decide(
            state,
            ident,
            approve=action == "approve",
            who=session.user,
            reason=field(form, "reason"),
        )
        return redirect(f"/requests/{ident}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.close()

    store = sessions or SessionStore()
    app = Starlette(
        routes=[
            Route("/", page(status)),
            Route("/signin", page(signin_form, public=True)),
            Route("/signin", page(signin, public=True), methods=["POST"]),
            Route("/signout", page(signout, public=True), methods=["POST"]),
            Route("/airlock", page(airlock)),
            Route("/airlock/{task}", page(review)),
            Route("/airlock/{task}", page(decide_review), methods=["POST"]),
            Route("/requests", page(requests)),
            Route("/requests/{id}", page(one_request)),
            Route("/requests/{id}", page(decide_request), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={Exception: server_error},
        lifespan=lifespan,
    )
    app.state.sessions = store
    app.state.cookie = TRE_COOKIE
    app.add_middleware(SecurityHeaders)
    return app
