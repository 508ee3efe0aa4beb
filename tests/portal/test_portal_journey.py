"""The portal and a TRE's page in a real browser, through a real network.

apply -> committee approves -> project exists -> submit (dry run first) -> approver
approves the job -> held at the TREs -> each TRE's checker releases it on its page ->
the result page shows the count (checked against pandas on the pooled data) -> the
public register shows the project. Then the refusals: a researcher on an admin page, a
forged CSRF token, another project's job, and no private field on the public register.
An anonymous visitor searches the public catalogue, where only tre-a's operator described
(so published) its dataset.
The browser's console must show no Content-Security-Policy violation.
"""

from __future__ import annotations

import csv
import io
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from lifelines import KaplanMeierFitter
from portal_browser import ARTIFACTS, Served
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from fedtre.catalogue.description import ColumnDescription, DatasetDescription
from fedtre.notebook import disclosure_note
from fedtre.package.verify import verify_package
from fedtre.portal import svg
from fedtre.portal.coordinator_app import PortalConfig
from fedtre.portal.coordinator_app import create_app as portal_app
from fedtre.portal.tre_app import TrePortalConfig, ensure_token
from fedtre.portal.tre_app import create_app as tre_app
from fedtre.testing import LocalNetwork, eventually
from node_agent.app import Agent
from node_agent.config import load_config, write_config
from node_agent.connection import AGENT_VERSION

ORG = "University of Westmoor"
PRIVATE = "Counts by age band and sex (internal ref xq7)"
FRAMES = {
    node: pd.DataFrame(
        {
            "age": np.random.default_rng(seed).integers(18, 90, 60 + 17 * seed),
            "sex": np.random.default_rng(seed + 9).choice(["F", "M"], 60 + 17 * seed),
            "days": np.random.default_rng(seed + 20).integers(1, 12, 60 + 17 * seed) * 30,
            "died": np.random.default_rng(seed + 30).integers(0, 2, 60 + 17 * seed),
        }
    )
    for seed, node in enumerate(("tre-a", "tre-b"))
}
# Exact counts (no rounding or noise) so the page can be checked against pandas; every
# count waits for each TRE's output checker.
POLICY = {
    "threshold": 0,
    "rounding_base": 1,
    "perturbation": "rounding",
    "hold_for_review": ["count"],
}
# What tre-a's operator writes about its cohort, publishing it in the public catalogue.
DESCRIPTION = DatasetDescription(
    title="Westmoor general practice cohort",
    abstract="Adults registered with general practices in Westmoor.",
    custodian="Westmoor Trusted Research Environment",
    contact="data@tre-a.example.org",
    keywords=("hypertension", "primary care"),
    temporal_start=date(2018, 1, 1),
    spatial_coverage="England",
    access_rights="Apply to the Westmoor data access committee",
)
CODEBOOK = {
    "age": ColumnDescription("Age at registration", unit="years"),
    "sex": ColumnDescription("Sex recorded at registration", labels={"F": "female", "M": "male"}),
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    network = LocalNetwork(
        {node: {"cohort": frame} for node, frame in FRAMES.items()},
        policy=POLICY,
        auto_approve=False,
        ping_interval=0.3,
        metrics=True,
        grids={"cohort": {"age": 1, "days": 30}},
        # tre-b's operator approves each project before its first task runs there
        governance={"tre-b": {"operator_approval": "project"}},
        directory=tmp_path_factory.mktemp("portal"),
    )
    with network:
        network.add_user("ines", "researcher", projects=())
        with network.client("admin") as admin:
            admin.applications.set_affiliation("ines", ORG, sector="Academia", accredited=True)
        describe(network, "tre-a")
        yield network


def describe(network: LocalNetwork, node: str) -> None:
    """The node's operator describes its cohort in agent.toml and restarts its agent."""
    path = network.directory / "nodes" / node / "agent.toml"
    network.stop_agent(node)
    config = load_config(path)
    cohort = replace(
        config.datasets["cohort"], description=DESCRIPTION, column_descriptions=CODEBOOK
    )
    config = write_config(path, replace(config, datasets={"cohort": cohort}))
    network.agents[node] = agent = Agent(config)
    agent.start()
    with network.client("admin") as admin:
        eventually(
            lambda: (
                any(n.node_id == node and n.online for n in admin.nodes())
                and any(e.node == node and e.described for e in admin.catalogue())
            ),
            what=f"{node} back online with its description",
        )


@pytest.fixture(scope="module")
def sites(net: Any) -> Iterator[dict[str, Any]]:
    portal = Served(
        portal_app(
            PortalConfig(
                net.api_address,
                net.pki / "ca" / "ca.pem",
                f"http://127.0.0.1:{net.coordinator.metrics_port}",
            )
        )
    )
    tres = {}
    for node in FRAMES:
        home = net.directory / "nodes" / node
        ensure_token(home / "portal-token")
        tres[node] = Served(tre_app(TrePortalConfig(home / "agent.toml", home / "portal-token")))
    yield {
        "portal": f"http://localhost:{portal.port}",
        **{n: f"http://127.0.0.1:{s.port}" for n, s in tres.items()},
    }
    for served in (portal, *tres.values()):
        served.stop()


def wait_for(driver: Any, css: str, text: str = "", timeout: float = 20) -> Any:
    """The element matching css once it holds text, on the page as it is now.

    Asked in one script each time: after a click the previous page's element (or one htmx
    is swapping) may vanish between finding it and reading it; a call made while the page
    is being replaced fails and is asked again.
    """
    script = (
        "const e = document.querySelector(arguments[0]);"
        "return e !== null && e.textContent.includes(arguments[1]);"
    )
    WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(WebDriverException,)
    ).until(lambda d: d.execute_script(script, css, text))
    return driver.find_element(By.CSS_SELECTOR, css)


def sign_in(driver: Any, base: str, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    wait_for(driver, "#whoami")


def reload_until(
    driver: Any, url: str, css: str, text: str | tuple[str, ...] = "", timeout: float = 30
) -> Any:
    """Load url until an element matching css (holding each text) is on it."""
    texts = (text,) if isinstance(text, str) else text

    def found(d: Any) -> Any:
        d.get(url)
        elements = [
            e for e in d.find_elements(By.CSS_SELECTOR, css) if all(t in e.text for t in texts)
        ]
        return elements[0] if elements else False

    return WebDriverWait(
        driver, timeout, poll_frequency=0.3, ignored_exceptions=(WebDriverException,)
    ).until(found)


def tre_sign_in(driver: Any, net: Any, base: str, node: str) -> None:
    token = (net.directory / "nodes" / node / "portal-token").read_text().strip()
    driver.get(f"{base}/signin")
    fill(driver, {"name": f"checker-{node}", "token": token})
    driver.find_element(By.ID, "signin").click()
    wait_for(driver, "#agent-state")
    shot(driver, f"tre-status-{node}")


def operator_approves(driver: Any, base: str, project: str, title: str = "") -> None:
    """On a TRE's page: open the project's request (with its approved application, once
    the agent has fetched it) and approve it."""
    row = reload_until(driver, f"{base}/requests", "tbody tr", text=(f" {project} ", "waiting"))
    row.find_element(By.TAG_NAME, "a").click()
    url = driver.current_url
    lines = reload_until(driver, url, "pre.request", text=title or project).text
    assert f"approve project '{project}'" in lines
    if title:
        shot(driver, "tre-operator-request")
    driver.find_element(By.ID, "reason").send_keys("Within our terms.")
    driver.find_element(By.ID, "approve").click()
    wait_for(driver, "pre.request", "by checker-")
    assert not driver.find_elements(By.ID, "approve")  # decided: no form any more


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def fill(driver: Any, values: dict[str, str]) -> None:
    for name, value in values.items():
        element = driver.find_element(By.ID, name)
        element.clear()
        element.send_keys(value)


def test_journey_apply_to_register(chrome: Any, net: Any, sites: dict[str, str]) -> None:
    portal = sites["portal"]

    # The researcher applies.
    sign_in(chrome, portal, net.tokens["ines"])
    chrome.get(f"{portal}/apply")
    end = date.today() + timedelta(days=300)
    fill(
        chrome,
        {
            "project_name": "westmoor-bp",
            "title": "Blood pressure in Westmoor",
            "organisation": ORG,
            "lay_summary": "How common high blood pressure is.",
            "public_benefit": "Better screening.",
            "technical_summary": PRIVATE,
            "funders": "Westmoor Trust",
            "article6": "6(1)(e)",
            "article9": "9(2)(j)",
            "duty_of_confidentiality": "Section 251 support",
            "national_data_opt_out": "Applied",
            "nodes": "tre-a, tre-b",
            "datasets": "cohort",
            "analyses": "count",
            "linkage": "none",
            "expected_outputs": "A paper",
        },
    )
    for name, day in (("start_date", date.today()), ("end_date", end)):
        chrome.execute_script(
            "arguments[0].value = arguments[1]", chrome.find_element(By.ID, name), day.isoformat()
        )
    shot(chrome, "apply")
    chrome.find_element(By.ID, "apply").click()
    wait_for(chrome, "#app-state", "submitted")
    app_url = chrome.current_url

    # The committee approves, with the full request beside the decision.
    sign_in(chrome, portal, net.tokens["approver"])
    chrome.get(app_url)
    assert PRIVATE in chrome.find_element(By.CSS_SELECTOR, ".request").text
    shot(chrome, "application-decision")
    chrome.find_element(By.ID, "comment").send_keys("Clear public benefit.")
    narrowed = end - timedelta(days=30)  # an approval may end the project earlier
    chrome.execute_script(
        "arguments[0].value = arguments[1]",
        chrome.find_element(By.ID, "narrow-end"),
        narrowed.isoformat(),
    )
    chrome.find_element(By.ID, "approve").click()
    wait_for(chrome, "#app-state", "approved")
    assert f"until {narrowed.isoformat()}" in chrome.find_element(By.ID, "approved-scope").text

    # The project exists; the researcher checks a job (dry run) and submits it.
    sign_in(chrome, portal, net.tokens["ines"])
    chrome.get(f"{portal}/projects")
    assert "westmoor-bp" in chrome.find_element(By.TAG_NAME, "table").text
    chrome.get(f"{portal}/submit?dataset=cohort")
    Select(chrome.find_element(By.ID, "analysis")).select_by_value("count")
    Select(chrome.find_element(By.ID, "project")).select_by_value("westmoor-bp")
    fill(chrome, {"filter": "bmi >= 30"})  # no such column here: the dry run says so
    chrome.find_element(By.ID, "dry-run").click()
    wait_for(chrome, "#dry-run-report", "would refuse")
    assert "bmi" in chrome.find_element(By.ID, "dry-run-report").text
    fill(chrome, {"filter": "age >= 40"})
    chrome.find_element(By.ID, "dry-run").click()
    wait_for(chrome, "#dry-run-report", "would accept")
    assert chrome.find_element(By.ID, "filter").get_attribute("value") == "age >= 40"
    shot(chrome, "submit")
    chrome.find_element(By.ID, "submit").click()
    wait_for(chrome, "#job-state", "pending approval")
    job_url = chrome.current_url
    job_id = int(job_url.rstrip("/").rsplit("/", 1)[1])

    # The approver approves it from the inbox.
    sign_in(chrome, portal, net.tokens["approver"])
    chrome.get(f"{portal}/inbox/jobs")
    shot(chrome, "job-inbox")
    chrome.find_element(By.ID, f"approve-{job_id}").click()
    wait_for(chrome, "#job-state", "running")

    # The researcher watches it live while each TRE's checker releases it.
    sign_in(chrome, portal, net.tokens["ines"])
    chrome.get(job_url)
    wait_for(chrome, "#node-outcomes", "output checker reviews count outputs", timeout=30)
    wait_for(chrome, "#node-outcomes", "tre-b is holding its output", timeout=30)
    researcher_tab = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    for node in FRAMES:
        tre_sign_in(chrome, net, sites[node], node)
        if node == "tre-b":
            operator_approves(chrome, sites[node], "westmoor-bp", "Blood pressure in Westmoor")
        reload_until(chrome, f"{sites[node]}/airlock", "tbody a").click()
        rules = wait_for(chrome, "#rules").text
        assert "threshold" in rules
        held = chrome.find_element(By.ID, "held-payload").text
        # the exact value the checker releases
        assert f'"n": {int((FRAMES[node]["age"] >= 40).sum())}' in held
        if node == "tre-a":
            shot(chrome, "tre-airlock-review")
        chrome.find_element(By.ID, "reason").send_keys("Aggregate count, fine.")
        chrome.find_element(By.ID, "release").click()
        wait_for(chrome, "#review-status", f"by checker-{node}")
    chrome.close()
    chrome.switch_to.window(researcher_tab)

    # htmx polling turns the page to the result without a reload.
    wait_for(chrome, "#job-state", "completed", timeout=30)
    pooled = int((pd.concat(FRAMES.values())["age"] >= 40).sum())
    table = wait_for(chrome, "#result-table").text
    assert str(pooled) in table.split()
    with net.client("ines") as ines:
        finished = ines.job(job_id)
        assert finished.combined is not None
    assert "released its output" in chrome.find_element(By.ID, "node-outcomes").text
    # and what the nodes' rules did to the figures, in the words the notebook uses
    note = chrome.find_element(By.ID, "disclosure-note").text
    assert note == disclosure_note(finished) and note.startswith("Each node released its part")
    shot(chrome, "result")
    links = [a.get_attribute("href") for a in chrome.find_elements(By.CSS_SELECTOR, "a[download]")]
    assert any(h.endswith("/result.csv") for h in links) and any(
        h.endswith("/package.zip") for h in links
    )

    chrome.get(f"{portal}/jobs")
    wait_for(chrome, "#job-rows", "westmoor-bp")
    # read in one script: htmx swaps the rows every few seconds
    row = chrome.execute_script("return document.querySelector('#job-rows tr').textContent")
    assert row.strip().startswith(str(job_id)) and "completed" in row
    shot(chrome, "jobs")

    # The public register shows the project, without signing in, and no private field.
    chrome.delete_all_cookies()
    chrome.get(f"{portal}/register")
    register = wait_for(chrome, ".register-entry").text
    assert "westmoor-bp" in register and "Blood pressure in Westmoor" in register
    assert narrowed.isoformat() in register  # the approved end, not the asked one
    assert end.isoformat() not in register
    page = chrome.page_source
    for secret in (PRIVATE, "ines", "Clear public benefit.", "Westmoor Trust", net.tokens["ines"]):
        assert secret not in page
    shot(chrome, "register")

    assert not csp_violations(chrome)


def test_refusals(chrome: Any, net: Any, sites: dict[str, str]) -> None:
    portal = sites["portal"]
    net.add_project("hidden", members=("admin",))
    with net.client("admin") as admin:
        other = admin.submit("count", dataset="cohort", project="hidden").id

    # A token the coordinator does not know.
    chrome.delete_all_cookies()
    chrome.get(f"{portal}/signin")
    fill(chrome, {"token": "ft1.0123456789ab.not-a-real-secret"})
    chrome.find_element(By.ID, "signin").click()
    wait_for(chrome, "#error", "does not accept this token")

    # Signing in issues a new session id: one planted before (session fixation) stays anonymous.
    planted = chrome.get_cookie("fedtre_portal_session")["value"]
    chrome.get(f"{portal}/signin")
    chrome.find_element(By.ID, "token").send_keys(net.tokens["ines"])
    chrome.find_element(By.ID, "signin").click()
    wait_for(chrome, "#whoami")
    assert chrome.get_cookie("fedtre_portal_session")["value"] != planted
    request = urllib.request.Request(
        f"{portal}/jobs", headers={"Cookie": f"fedtre_portal_session={planted}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.url.endswith("/signin")
    # An admin's page: the coordinator refuses, the portal shows its refusal.
    chrome.get(f"{portal}/admin/users")
    assert "Refused" in chrome.title and chrome.find_element(By.ID, "error").text
    assert not chrome.find_elements(By.TAG_NAME, "table")
    # Another project's job.
    chrome.get(f"{portal}/jobs/{other}")
    assert "Refused" in chrome.title
    assert "hidden" not in chrome.find_element(By.TAG_NAME, "main").text
    for download in ("result.csv", "package.zip"):  # nor its table or package by its id
        chrome.get(f"{portal}/jobs/{other}/{download}")
        assert "Refused" in chrome.title
    # A forged CSRF token: the form is refused and nothing happens.
    chrome.get(f"{portal}/apply")
    chrome.execute_script("document.querySelector('main form input[name=csrf]').value = 'forged'")
    fill(chrome, {"project_name": "forged-project", "title": "Forged"})
    chrome.find_element(By.ID, "apply").click()
    wait_for(chrome, "#error", "did not come from this site")
    with net.client("admin") as admin:
        assert "forged-project" not in {
            a.form.get("project_name") for a in admin.applications.applications()
        }
    # Signed out, a page sends you to sign in; the old session id is dead server-side.
    cookie = chrome.get_cookie("fedtre_portal_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    chrome.get(f"{portal}/jobs")
    chrome.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait_for(chrome, "#signin")
    chrome.add_cookie({"name": "fedtre_portal_session", "value": cookie["value"], "secure": True})
    chrome.get(f"{portal}/jobs")
    assert chrome.current_url.endswith("/signin")

    # Admin pages for an admin; token ids, never a token's secret.
    sign_in(chrome, portal, net.tokens["admin"])
    chrome.get(f"{portal}/admin/users")
    assert "ines" in chrome.find_element(By.TAG_NAME, "main").text
    assert not any(token in chrome.page_source for token in net.tokens.values())
    chrome.get(f"{portal}/admin/nodes")
    rows = {
        row.find_element(By.TAG_NAME, "td").text: row.text
        for row in chrome.find_elements(By.CSS_SELECTOR, "table tbody tr")
    }
    for node in FRAMES:  # the version the agent sent, the certificate it presented
        cert = x509.load_pem_x509_certificate((net.pki / "nodes" / node / "cert.pem").read_bytes())
        assert AGENT_VERSION in rows[node] and "online" in rows[node]
        assert f"{cert.not_valid_after_utc:%Y-%m-%d}" in rows[node]
    shot(chrome, "admin-nodes")
    chrome.get(f"{portal}/admin/audit?event=application")
    chrome.find_element(By.ID, "verify").click()
    wait_for(chrome, "#verify-report", "intact")
    assert "application" in chrome.find_element(By.CSS_SELECTOR, "table tbody").text
    shot(chrome, "audit")
    chrome.get(f"{portal}/catalogue?column=age")
    listed = chrome.find_element(By.TAG_NAME, "main").text
    assert "cohort at tre-b (online)" in listed  # signed in, undescribed datasets too
    shot(chrome, "catalogue")

    # The TRE's page refuses a wrong token.
    chrome.get(f"{sites['tre-a']}/signin")
    fill(chrome, {"name": "mallory", "token": "not-the-token"})
    chrome.find_element(By.ID, "signin").click()
    wait_for(chrome, "#error", "not this TRE page's token")
    chrome.get(f"{sites['tre-a']}/airlock")
    assert chrome.current_url.endswith("/signin")

    assert not csp_violations(chrome)


def test_an_anonymous_visitor_searches_the_public_catalogue(
    chrome: Any, net: Any, sites: dict[str, str]
) -> None:
    portal = sites["portal"]
    chrome.get(f"{portal}/register")
    chrome.delete_all_cookies()  # the portal's: the page open may have been another site's
    chrome.get(f"{portal}/register")
    chrome.find_element(By.LINK_TEXT, "Catalogue").click()
    wait_for(chrome, "main", "found")
    assert not chrome.find_elements(By.ID, "whoami")  # signed out

    def search(keyword: str, column: str) -> list[str]:
        fill(chrome, {"q": keyword, "column": column})
        chrome.execute_script("document.body.setAttribute('data-searched', '')")
        chrome.find_element(By.ID, "search").click()
        # the results page, loaded: not the form's page while it is being replaced
        new_page = (
            "return document.readyState === 'complete' && document.body !== null"
            " && !document.body.hasAttribute('data-searched');"
        )
        WebDriverWait(
            chrome, 20, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)
        ).until(lambda d: d.execute_script(new_page))
        assert chrome.find_element(By.ID, "q").get_attribute("value") == keyword
        return [e.text for e in chrome.find_elements(By.CSS_SELECTOR, ".catalogue-entry")]

    # Only the dataset its operator described: tre-b's is not published.
    everything = search("", "")
    assert [e.splitlines()[0] for e in everything] == ["cohort at tre-a"]
    assert "Westmoor general practice cohort" in everything[0]
    assert "Age at registration" in everything[0]
    assert "online" not in everything[0]  # the node's state is not public
    # By keyword (one of the operator's keywords), and by column.
    assert len(search("hypertension", "")) == 1
    assert search("cholesterol", "") == []
    assert len(search("", "sex")) == 1
    assert search("", "income") == []
    assert len(search("westmoor", "age")) == 1
    shot(chrome, "catalogue-public")
    assert not csp_violations(chrome)


def csp_violations(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
        or "Content-Security-Policy" in entry["message"]
    ]


def test_charts_and_downloads(chrome: Any, net: Any, sites: dict[str, str], tmp_path: Any) -> None:
    portal = sites["portal"]
    edges = [18, 40, 60, 91]
    with net.client("researcher") as researcher:
        job_id = researcher.submit(
            "histogram", dataset="cohort", params={"column": "age", "edges": edges}
        ).id
        km_id = researcher.submit(
            "kaplan_meier", dataset="cohort", params={"time": "days", "event": "died"}
        ).id
    with net.client("approver") as approver:
        approver.approve(job_id)
        approver.approve(km_id)
    tre_sign_in(chrome, net, sites["tre-b"], "tre-b")
    operator_approves(chrome, sites["tre-b"], "default")
    sign_in(chrome, portal, net.tokens["researcher"])
    chrome.get(f"{portal}/jobs/{job_id}")
    wait_for(chrome, "#job-state", "completed", timeout=30)

    # The bars are the pooled counts, as pandas bins the pooled ages.
    ages = pd.concat(FRAMES.values())["age"]
    expected = pd.cut(ages, edges, right=False).value_counts(sort=False).tolist()
    titles = [
        rect.get_attribute("textContent")
        for rect in chrome.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    ]
    # (the outer bins are released open-ended: "[-inf, 40.0)" and "[60.0, inf)")
    assert [int(t.rsplit(": ", 1)[1]) for t in titles] == expected
    shot(chrome, "histogram")

    # CSV and the release package, downloaded with the browser's session.
    cookie = chrome.get_cookie("fedtre_portal_session")["value"]

    def download(path: str) -> bytes:
        request = urllib.request.Request(
            f"{portal}{path}", headers={"Cookie": f"fedtre_portal_session={cookie}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    rows = list(csv.reader(io.StringIO(download(f"/jobs/{job_id}/result.csv").decode())))
    assert rows[0] == ["age", "n"]
    assert [int(float(row[1])) for row in rows[1:]] == expected
    package = tmp_path / "job.zip"
    package.write_bytes(download(f"/jobs/{job_id}/package.zip"))
    verified_job, checks = verify_package(package, net.pki / "ca" / "ca.pem")
    assert verified_job == job_id and sorted(c.node for c in checks) == sorted(FRAMES)

    # The Kaplan-Meier curve, drawn as lifelines fits the pooled records.
    chrome.get(f"{portal}/jobs/{km_id}")
    wait_for(chrome, "#job-state", "completed", timeout=30)
    path = chrome.find_element(By.CSS_SELECTOR, "svg.chart path").get_attribute("d")
    shot(chrome, "kaplan-meier")

    # The drawn steps, back in (time, survival), against lifelines on the pooled records.
    with net.client("researcher") as researcher:
        table = researcher.job(km_id).combined["groups"][0][1]["table"]
    last = max(row[0] for row in table if row[0] is not None)
    xs = [float(p[1:]) for p in path.split() if p.startswith("H")]
    ys = [float(p[1:]) for p in path.split() if p.startswith("V")]
    drawn = [
        (
            (x - svg.PAD) / (svg.WIDTH - 2 * svg.PAD) * last,
            (svg.HEIGHT - svg.PAD - y) / (svg.HEIGHT - 2 * svg.PAD),
        )
        for x, y in zip(xs, ys, strict=True)
    ]
    pooled = pd.concat(FRAMES.values())
    fitted = KaplanMeierFitter().fit(pooled["days"], pooled["died"])
    expected = fitted.survival_function_at_times([t for t, _ in drawn]).to_numpy()
    assert len(drawn) >= 5
    assert np.allclose([s for _, s in drawn], expected, atol=0.002)
    assert not csp_violations(chrome)


def test_application_returned_changed_approved_published_withdrawn(
    chrome: Any, net: Any, sites: dict[str, str]
) -> None:
    portal = sites["portal"]
    form = {
        "applicants": ["ines"],
        "organisation": ORG,
        "project_name": "westmoor-two",
        "title": "Second Westmoor study",
        "lay_summary": "Age at first visit.",
        "public_benefit": "Planning clinics.",
        "technical_summary": "Counts.",
        "start_date": date.today().isoformat(),
        "end_date": (date.today() + timedelta(days=100)).isoformat(),
        "article6": "6(1)(e)",
        "article9": "9(2)(j)",
        "duty_of_confidentiality": "Consent",
        "national_data_opt_out": "Applied",
        "nodes": ["tre-a"],
        "datasets": ["cohort"],
        "analyses": ["count"],
        "expected_outputs": "A report",
    }
    with net.client("ines") as ines:
        app_id = ines.applications.apply(form).id
    url = f"{portal}/applications/{app_id}"

    sign_in(chrome, portal, net.tokens["approver"])
    chrome.get(url)
    chrome.find_element(By.ID, "comment").send_keys("Name the CAG reference.")
    chrome.find_element(By.ID, "return").click()
    wait_for(chrome, "#app-state", "returned")

    sign_in(chrome, portal, net.tokens["ines"])
    chrome.get(url)
    assert "Name the CAG reference." in chrome.find_element(By.TAG_NAME, "main").text
    assert chrome.find_element(By.ID, "title").get_attribute("value") == form["title"]
    fill(chrome, {"duty_of_confidentiality": "Section 251 support (CAG ref 24/CAG/0009)"})
    chrome.find_element(By.ID, "resubmit").click()
    wait_for(chrome, "#app-state", "submitted")
    assert "version 2" in chrome.find_element(By.TAG_NAME, "main").text

    sign_in(chrome, portal, net.tokens["approver"])
    chrome.get(url)
    chrome.find_element(By.ID, "approve").click()
    wait_for(chrome, "#app-state", "approved")

    sign_in(chrome, portal, net.tokens["ines"])
    chrome.get(url)
    fill(chrome, {"publication": "https://doi.org/10.1234/westmoor"})
    chrome.find_element(By.ID, "publish").click()
    wait_for(chrome, "main", "https://doi.org/10.1234/westmoor")
    fill(chrome, {"withdraw-comment": "Funding ended."})
    chrome.find_element(By.ID, "withdraw").click()
    wait_for(chrome, "#app-state", "withdrawn")

    chrome.delete_all_cookies()
    chrome.get(f"{portal}/register")
    entry = next(
        e.text
        for e in chrome.find_elements(By.CSS_SELECTOR, ".register-entry")
        if "westmoor-two" in e.text
    )
    assert "withdrawn" in entry and "https://doi.org/10.1234/westmoor" in entry
    assert "24/CAG/0009" in entry and "Funding ended." not in chrome.page_source
    assert not csp_violations(chrome)
