"""`fedtre portal serve`: the network's web portal, a client of the coordinator's API.

It holds no authority of its own. Each signed-in person's API token is kept server-side
in their session and every page calls the coordinator with it (fedtre.client.Client), so
the coordinator's checks, refusals and audit apply unchanged: a page a person may not
see is the coordinator's PERMISSION_DENIED, shown as 403. The portal only decides which
links to show (from WhoAmI's role), never what may be done.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fedtre.analyses import CATALOGUE
from fedtre.applications_client import read_register, register_entries
from fedtre.catalogue.entry import public_entries
from fedtre.client import Client, Result
from fedtre.errors import InvalidRequest, NotFound, Unauthenticated
from fedtre.notebook import disclosure_note
from fedtre.ops_http import read_page
from fedtre.portal import svg, words
from fedtre.portal.pages import field, fields, page
from fedtre.portal.web import (
    PORTAL_COOKIE,
    STATIC_DIR,
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

MAX_JOBS = 1000
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True)
class PortalConfig:
    """coordinator: the API address (host:port); ca: the network CA certificate;
    register_url: the coordinator's ops HTTP server, for the public pages (the Data Use
    Register, and the catalogue as anonymous visitors see it)."""

    coordinator: str
    ca: Path
    register_url: str | None = None


def create_app(config: PortalConfig, sessions: SessionStore | None = None) -> Starlette:
    def client(session: Session) -> Client:
        return session.data["client"]  # type: ignore[no-any-return]

    # -- sign-in ---------------------------------------------------------------------

    def signin_form(request: Request, session: Session, form: FormData | None) -> Response:
        return render(request, session, "signin.html")

    def signin(request: Request, session: Session, form: FormData | None) -> Response:
        token = field(form, "token")
        upload = form.get("token_file") if form is not None else None
        if not token and isinstance(upload, UploadFile):
            token = upload.file.read(MAX_TOKEN_BYTES).decode("utf-8", "replace").strip()
        if not token:
            raise InvalidRequest("paste your API token, or choose your token file")
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise InvalidRequest("that is not an API token: paste only the token, e.g. ft1.…")
        person = Client(config.coordinator, ca=config.ca, token=token)
        try:
            name, role, _ = person.admin.whoami()
        except Unauthenticated:
            person.close()
            raise InvalidRequest(
                "the coordinator does not accept this token (unknown, revoked or expired); "
                "check you pasted all of it, or ask your admin for a new one"
            ) from None
        except Exception:
            person.close()
            raise
        signed = begin_session(request, session, name, role)
        signed.data["client"] = person
        signed.closers.append(person.close)
        response = redirect("/")
        set_cookie(request, response, signed)
        return response

    def home(request: Request, session: Session, form: FormData | None) -> Response:
        _, _, projects = client(session).admin.whoami()
        return render(request, session, "home.html", projects=projects)

    # -- public and discovery --------------------------------------------------------

    def public_url() -> str:
        if not config.register_url:
            raise NotFound("this portal was started without --register-url")
        return config.register_url

    def catalogue(request: Request, session: Session, form: FormData | None) -> Response:
        """Every dataset the person's token shows; signed out, the public catalogue (the
        described datasets only)."""
        q = request.query_params.get("q", "").strip().lower()
        column = request.query_params.get("column", "").strip().lower()
        if session.signed_in:
            found = client(session).catalogue()
        else:
            found = public_entries(read_page(public_url(), "/catalogue.json"))
        entries = [e for e in found if words.matches(e, q) and words.has_column(e, column)]
        return render(request, session, "catalogue.html", entries=entries, q=q, column=column)

    def register(request: Request, session: Session, form: FormData | None) -> Response:
        entries = register_entries(read_register(public_url(), "json"))
        return render(request, session, "register.html", entries=entries)

    # -- applications ----------------------------------------------------------------

    def applications(request: Request, session: Session, form: FormData | None) -> Response:
        state = request.query_params.get("state", "")
        found = client(session).applications.applications(state)
        return render(request, session, "applications.html", applications=found, state=state)

    def apply_form(request: Request, session: Session, form: FormData | None) -> Response:
        return render(request, session, "apply.html", fields=words.APPLICATION_FIELDS)

    def application_form(form: FormData | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, _label, kind in words.APPLICATION_FIELDS:
            values[name] = fields(form, name) if kind == "list" else field(form, name)
        return {k: v for k, v in values.items() if v}

    def apply(request: Request, session: Session, form: FormData | None) -> Response:
        app = client(session).applications.apply(application_form(form))
        return redirect(f"/applications/{app.id}")

    def resubmit(request: Request, session: Session, form: FormData | None) -> Response:
        app_id = int(request.path_params["id"])
        client(session).applications.resubmit(app_id, application_form(form))
        return redirect(f"/applications/{app_id}")

    def publish(request: Request, session: Session, form: FormData | None) -> Response:
        app_id = int(request.path_params["id"])
        client(session).applications.add_publication(app_id, field(form, "publication"))
        return redirect(f"/applications/{app_id}")

    def application(request: Request, session: Session, form: FormData | None) -> Response:
        found = client(session).applications.application(int(request.path_params["id"]))
        return render(
            request, session, "application.html", app=found, fields=words.APPLICATION_FIELDS
        )

    def decide_application(request: Request, session: Session, form: FormData | None) -> Response:
        app_id = int(request.path_params["id"])
        action, comment = field(form, "action"), field(form, "comment")
        apps = client(session).applications
        if action == "approve":  # an approval may narrow the request, never widen it
            apps.approve(
                app_id,
                comment=comment,
                nodes=fields(form, "nodes"),
                datasets=fields(form, "datasets"),
                analyses=fields(form, "analyses"),
                end_date=field(form, "end_date") or None,
            )
        elif action == "reject":
            apps.reject(app_id, comment)
        elif action == "return":
            apps.return_for_changes(app_id, comment)
        elif action == "withdraw":
            apps.withdraw(app_id, comment)
        else:
            raise InvalidRequest("choose approve, reject, return or withdraw")
        return redirect(f"/applications/{app_id}")

    def projects(request: Request, session: Session, form: FormData | None) -> Response:
        admin = client(session).admin
        _, _, mine = admin.whoami()
        listed = admin.projects() if session.role == "admin" else [admin.project(p) for p in mine]
        return render(request, session, "projects.html", projects=listed)

    # -- jobs ------------------------------------------------------------------------

    def jobs(request: Request, session: Session, form: FormData | None) -> Response:
        found = client(session).jobs(limit=MAX_JOBS)
        template = "job_rows.html" if request.headers.get("hx-request") else "jobs.html"
        return render(request, session, template, jobs=found)

    def job(request: Request, session: Session, form: FormData | None) -> Response:
        status = client(session).job(int(request.path_params["id"]))
        result = Result(status)
        frame = result.to_frame() if status.finished else None
        context: dict[str, Any] = {
            "job": status,
            "frame": frame,
            "nodes": [(name, words.node_outcome(task)) for name, task in status.tasks.items()],
            "chart": svg.chart(status.analysis, result.combined, frame) if status.finished else "",
            "cause": status.cause,
            # what the nodes' rules did to the figures (noise, rounding), in their own words
            "disclosure_note": disclosure_note(status) if status.finished else "",
        }
        if request.headers.get("hx-request"):
            return render(request, session, "job_status.html", **context)
        return render(request, session, "job.html", **context)

    def job_csv(request: Request, session: Session, form: FormData | None) -> Response:
        status = client(session).job(int(request.path_params["id"]))
        frame = Result(status).to_frame()
        if frame is None:
            raise NotFound(f"job {status.id} has no combined table (yet)")
        return Response(
            words.result_csv(frame),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="job-{status.id}.csv"'},
        )

    def job_package(request: Request, session: Session, form: FormData | None) -> Response:
        from fedtre.package.build import write_package

        status = client(session).job(int(request.path_params["id"]))
        with tempfile.TemporaryDirectory() as folder:
            path = write_package(status, Path(folder) / f"job-{status.id}.zip")
            body = path.read_bytes()
        return Response(
            body,
            media_type="application/zip",
            headers={"content-disposition": f'attachment; filename="job-{status.id}.zip"'},
        )

    def submit_page(
        request: Request,
        session: Session,
        dataset: str,
        values: dict[str, str],
        problems: tuple[tuple[str, str], ...] | None,
    ) -> Response:
        person = client(session)
        _, _, mine = person.admin.whoami()
        entries = person.catalogue()
        return render(
            request,
            session,
            "submit.html",
            datasets=sorted({e.dataset.name for e in entries}),
            dataset=dataset,
            columns=words.columns_of(entries, dataset),
            analyses=[(name, a.description) for name, a in CATALOGUE.items()],
            param_names=words.PARAM_NAMES,
            rows=range(words.PARAM_ROWS),
            projects=mine,
            values=values,
            problems=problems,
        )

    def submit_form(request: Request, session: Session, form: FormData | None) -> Response:
        return submit_page(request, session, request.query_params.get("dataset", ""), {}, None)

    def submit(request: Request, session: Session, form: FormData | None) -> Response:
        spec = words.job_spec(form, field)
        if field(form, "action") == "dry-run":
            report = client(session).submit(**spec, dry_run=True)
            values = {k: v for k, v in (form or {}).items() if isinstance(v, str) and k != "csrf"}
            return submit_page(request, session, spec["dataset"], values, report.problems)
        handle = client(session).submit(**spec)
        return redirect(f"/jobs/{handle.id}")

    def job_inbox(request: Request, session: Session, form: FormData | None) -> Response:
        waiting = client(session).jobs(state="pending_approval", limit=MAX_JOBS)
        return render(request, session, "job_inbox.html", jobs=waiting)

    def decide_job(request: Request, session: Session, form: FormData | None) -> Response:
        job_id = int(request.path_params["id"])
        if field(form, "action") == "approve":
            client(session).approve(job_id)
        elif field(form, "action") == "reject":
            client(session).reject(job_id, field(form, "reason"))
        else:
            raise InvalidRequest("choose approve or reject")
        return redirect(f"/jobs/{job_id}")

    # -- admin -----------------------------------------------------------------------

    def nodes(request: Request, session: Session, form: FormData | None) -> Response:
        person = client(session)
        network = person.network_status()
        return render(
            request,
            session,
            "nodes.html",
            nodes=person.nodes(),
            network=network,
            queues={q.node_id: q for q in network.nodes},
        )

    def users(request: Request, session: Session, form: FormData | None) -> Response:
        admin = client(session).admin
        return render(request, session, "users.html", users=admin.users(), tokens=admin.tokens())

    def audit(request: Request, session: Session, form: FormData | None) -> Response:
        event = request.query_params.get("event", "").strip()
        actor = request.query_params.get("actor", "").strip()
        admin = client(session).admin
        report = admin.verify_audit() if form is not None else None
        entries = [
            e
            for e in admin.export_audit()
            if (not event or event in e["event"]) and (not actor or actor == e["actor"])
        ][-500:]
        return render(
            request,
            session,
            "audit.html",
            entries=entries[::-1],
            event=event,
            actor=actor,
            report=report,
        )

    store = sessions or SessionStore()
    app = Starlette(
        routes=[
            Route("/", page(home)),
            Route("/signin", page(signin_form, public=True)),
            Route("/signin", page(signin, public=True), methods=["POST"]),
            Route("/signout", page(signout, public=True), methods=["POST"]),
            Route("/catalogue", page(catalogue, public=True)),
            Route("/register", page(register, public=True)),
            Route("/applications", page(applications)),
            Route("/apply", page(apply_form)),
            Route("/apply", page(apply), methods=["POST"]),
            Route("/applications/{id:int}", page(application)),
            Route("/applications/{id:int}", page(decide_application), methods=["POST"]),
            Route("/applications/{id:int}/resubmit", page(resubmit), methods=["POST"]),
            Route("/applications/{id:int}/publish", page(publish), methods=["POST"]),
            Route("/projects", page(projects)),
            Route("/jobs", page(jobs)),
            Route("/jobs/{id:int}", page(job)),
            Route("/jobs/{id:int}", page(decide_job), methods=["POST"]),
            Route("/jobs/{id:int}/result.csv", page(job_csv)),
            Route("/jobs/{id:int}/package.zip", page(job_package)),
            Route("/submit", page(submit_form)),
            Route("/submit", page(submit), methods=["POST"]),
            Route("/inbox/jobs", page(job_inbox)),
            Route("/admin/nodes", page(nodes)),
            Route("/admin/users", page(users)),
            Route("/admin/audit", page(audit)),
            Route("/admin/audit", page(audit), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={Exception: server_error},
    )
    app.state.sessions = store
    app.state.cookie = PORTAL_COOKIE
    app.add_middleware(SecurityHeaders)
    return app
