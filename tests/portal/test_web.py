"""The portal's session, CSRF, header and listen rules, without a browser."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from fedtre.cli.main import main as fedtre_main
from fedtre.errors import InvalidRequest
from fedtre.portal import web, words
from fedtre.portal.coordinator_app import PortalConfig, create_app
from fedtre.portal.pages import page
from fedtre.portal.tre_app import ensure_token, read_token
from fedtre.portal.web import PORTAL_COOKIE, SessionStore, require_loopback_without_tls


def test_sessions_expire_when_idle_and_on_drop() -> None:
    now = [0.0]
    store = SessionStore(idle_seconds=60, clock=lambda: now[0])
    closed: list[str] = []
    session = store.new()
    session.closers.append(lambda: closed.append(session.id))
    assert len(session.id) >= 40 and session.csrf != session.id
    now[0] = 59
    assert store.get(session.id) is session  # a request renews it
    now[0] = 118
    assert store.get(session.id) is session
    now[0] = 179
    assert store.get(session.id) is None and closed == [session.id]
    other = store.new()
    store.drop(other)
    assert store.get(other.id) is None
    assert store.get(None) is None and store.get("made-up") is None
    busy = SessionStore(idle_seconds=60, max_age=150, clock=lambda: now[0])
    now[0] = 0
    active = busy.new()
    for t in (50, 100, 150):
        now[0] = t
        assert busy.get(active.id) is active
    now[0] = 151
    assert busy.get(active.id) is None  # however active, not for ever


@pytest.fixture
def portal(tmp_path: Path) -> TestClient:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used: nothing here reaches a coordinator")
    return TestClient(create_app(PortalConfig("127.0.0.1:1", ca)), base_url="https://localhost")


def test_every_response_has_the_csp_and_the_cookie_is_locked_down(portal: TestClient) -> None:
    response = portal.get("/signin")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp
        and "frame-ancestors 'none'" in csp
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"].lower()
    assert f"{PORTAL_COOKIE}=" in cookie
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    assert "<script>" not in response.text and " style=" not in response.text
    assert portal.get("/static/htmx.min.js").headers["content-security-policy"] == csp


def test_a_post_without_the_session_csrf_token_is_refused(portal: TestClient) -> None:
    page = portal.get("/signin").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert portal.post("/signin", data={"csrf": "forged", "token": "t"}).status_code == 403
    assert portal.post("/signin", data={"token": "t"}).status_code == 403
    fresh = TestClient(portal.app, base_url="https://localhost")  # another browser, no cookie
    assert fresh.post("/signin", data={"csrf": csrf, "token": "t"}).status_code == 403
    # with the right token the form reaches the sign-in (which then finds no token)
    response = portal.post("/signin", data={"csrf": csrf, "token": ""})
    assert response.status_code == 400 and "paste your API token" in response.text
    response = portal.post("/signin", data={"csrf": csrf, "token": "tök en"})
    assert response.status_code == 400 and "not an API token" in response.text


def test_pages_need_a_session(portal: TestClient) -> None:
    for path in ("/", "/jobs", "/jobs/1", "/admin/audit", "/submit"):
        response = portal.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
    polled = portal.get("/jobs", headers={"HX-Request": "true"}, follow_redirects=False)
    assert polled.status_code == 204 and polled.headers["hx-redirect"] == "/signin"


def test_public_pages_need_the_coordinator_ops_address(portal: TestClient) -> None:
    for path in ("/catalogue", "/register"):  # public: no sign-in, but read from the coordinator
        response = portal.get(path, follow_redirects=False)
        assert response.status_code == 404 and "--register-url" in response.text


def test_plain_http_only_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        require_loopback_without_tls(host, tls=False)
    require_loopback_without_tls("0.0.0.0", tls=True)
    for host in ("0.0.0.0", "10.1.2.3", "portal.example.org"):
        with pytest.raises(InvalidRequest, match="tls-cert"):
            require_loopback_without_tls(host, tls=False)


def test_cli_refuses_a_public_address_without_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    code = fedtre_main(
        ["portal", "serve", "--coordinator", "c:1", "--ca", str(ca), "--listen", "0.0.0.0:8080"]
    )
    assert code == 2 and "TLS-terminating reverse proxy" in capsys.readouterr().err


def test_the_tre_page_refuses_a_public_address_before_creating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("")
    code = fedtre_main(["agent", "portal", "--config", str(config), "--listen", "10.0.0.5:8081"])
    assert code == 2 and "tls-cert" in capsys.readouterr().err
    assert not (tmp_path / "portal-token").exists()


def test_the_tre_page_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "portal-token"
    assert ensure_token(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) >= 40
    before = path.read_text()
    assert ensure_token(path) is False and path.read_text() == before


def test_a_failure_no_page_handled_still_has_the_headers_and_no_details(
    portal: TestClient,
) -> None:
    def fails(request: Any, session: Any, form: Any) -> Any:
        raise RuntimeError("internal detail ft1.secret")

    app = portal.app
    assert isinstance(app, Starlette)
    app.router.routes.insert(0, Route("/fails", page(fails, public=True)))
    crashing = TestClient(app, base_url="https://localhost", raise_server_exceptions=False)
    response = crashing.get("/fails")
    assert response.status_code == 500
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "ft1.secret" not in response.text and "Traceback" not in response.text


def test_the_result_csv_runs_no_spreadsheet_formula() -> None:
    frame = pd.DataFrame(
        {"=label": ['=HYPERLINK("http://x")', "+1", "plain"], "n": [-3.5, 2, 7]},
        index=pd.MultiIndex.from_tuples(
            [("@g", "-x"), ("ok", "\tz"), ("ok", "y")], names=["=by", "rows"]
        ),
    )
    rows = list(csv.reader(io.StringIO(words.result_csv(frame))))
    assert rows[0] == ["'=by", "rows", "'=label", "n"]
    assert rows[1] == ["'@g", "'-x", '\'=HYPERLINK("http://x")', "-3.5"]  # numbers unchanged
    assert rows[2] == ["ok", "'\tz", "'+1", "2.0"]
    assert rows[3] == ["ok", "y", "plain", "7.0"]


def test_the_tre_page_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "portal-token"
    ensure_token(path)
    assert read_token(path) == path.read_text().strip()
    path.chmod(0o644)
    with pytest.raises(InvalidRequest, match="chmod 600"):
        read_token(path)


def test_a_flood_of_anonymous_visitors_signs_nobody_out() -> None:
    store = SessionStore(max_sessions=100)
    signed = store.new()
    signed.user, signed.role = "alice", "researcher"
    for _ in range(500):  # requests without a cookie each open a session
        store.new()
    assert store.get(signed.id) is signed
    crowd = []
    for _ in range(150):
        crowd.append(store.new())
        crowd[-1].user = "someone"
    assert store.get(signed.id) is None  # when all are signed in, the oldest goes
    assert all(store.get(person.id) is person for person in crowd[-99:])


def test_every_template_escapes_what_it_shows() -> None:
    folder = Path(web.__file__).parent / "templates"
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert len(names) > 20
    for name in names:
        assert web.TEMPLATES.env.autoescape(name) is True, name  # type: ignore[operator]
        source = (folder / name).read_text()
        assert "|safe" not in source.replace(" ", "") and "autoescape" not in source, name
    hostile = '<script>alert(1)</script>"'
    html = web.TEMPLATES.env.get_template("error.html").render(session=None, message=hostile)
    assert hostile not in html and "&lt;script&gt;" in html
