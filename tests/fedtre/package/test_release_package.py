"""A job's release package through a real network: written, verified, and refused once altered."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import bagit
import numpy as np
import pytest

from fedtre.cli.main import main
from fedtre.disclosure.release import PLAIN_WORDS
from fedtre.identity.ca import init_network
from fedtre.package.build import DISCLOSURE_CHECK, PROFILE
from fedtre.package.verify import PackageInvalid, verify_package
from fedtre.synth import generate_cohort
from fedtre.testing import LocalNetwork

WAIT = 30


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    rng = np.random.default_rng(4)
    data = {
        "tre-a": {"cohort": generate_cohort(0, 300, rng)},
        "tre-b": {"cohort": generate_cohort(1, 260, rng)},
        # too few records to release anything under the default threshold of 10
        "tre-c": {"cohort": generate_cohort(2, 6, rng)},
    }
    with LocalNetwork(data, directory=tmp_path_factory.mktemp("package")) as network:
        yield network


def cli(net, *args: str) -> list[str]:
    return [*args, "--coordinator", net.api_address, "--identity", str(net.identity("researcher"))]


def ca(net) -> Path:
    return net.pki / "ca" / "ca.pem"


def run(net, analysis: str, params: dict) -> int:
    with net.client() as client:
        handle = client.submit(analysis, dataset="cohort", params=params)
        handle.result(WAIT)
        return handle.id


@pytest.fixture(scope="module")
def crosstab(net, tmp_path_factory):
    """A finished crosstab job, its status as the researcher sees it, and its package."""
    job_id = run(net, "crosstab", {"rows": "smoking", "columns": "sex"})
    out = tmp_path_factory.mktemp("out") / "job.zip"
    assert main(cli(net, "result", str(job_id), "--package", str(out))) == 0
    with net.client() as client:
        return client.job(job_id), out


def unpack(package: Path, where: Path) -> Path:
    with zipfile.ZipFile(package) as zf:
        zf.extractall(where)
    return where


def rebag(root: Path, out: Path) -> Path:
    """Recompute the bag's manifests over root, as a forger would, and zip it to out."""
    bagit.Bag(str(root)).save(manifests=True)
    with zipfile.ZipFile(out, "w") as zf:
        for path in root.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    return out


def crate_graph(root: Path) -> dict[str, dict]:
    crate = json.loads((root / "data" / "ro-crate-metadata.json").read_text())
    return {e["@id"]: e for e in crate["@graph"]}


def test_the_package_is_a_bag_holding_a_five_safes_crate(crosstab, tmp_path):
    job, package = crosstab
    assert package.stat().st_mode & 0o777 == 0o600
    root = unpack(package, tmp_path)

    # A BagIt bag with SHA-512 manifests over the crate
    bag = bagit.Bag(str(root))
    assert bag.algorithms == ["sha512"]
    assert "data/ro-crate-metadata.json" in bag.payload_entries()
    graph = crate_graph(root)
    assert graph["./"]["conformsTo"] == {"@id": PROFILE}

    # The request: who, which project, which analysis and parameters
    request = graph[f"#request-{job.id}"]
    assert request["@type"] == "CreateAction"
    assert graph[request["agent"]["@id"]]["name"] == "researcher"
    assert graph[request["instrument"]["@id"]]["name"] == "fedtre analysis crosstab"
    params = {graph[o["@id"]]["name"]: graph[o["@id"]]["value"] for o in request["object"][1:]}
    assert params == {k: json.dumps(v, sort_keys=True) for k, v in job.params.items()}
    assert (params["rows"], params["columns"]) == ('"smoking"', '"sex"')
    assert graph["./"]["sourceOrganization"] == {"@id": "#project-default"}
    asked = json.loads((root / "data" / "request.json").read_text())
    assert (asked["job_id"], asked["project"], asked["submitted_by"]) == (
        job.id,
        "default",
        "researcher",
    )

    # One AssessAction per check per node: the rule, its criterion and its outcome
    for node, task in job.tasks.items():
        release = json.loads((root / "data" / "nodes" / node / "release.json").read_text())
        assert release["payload"] == json.loads(json.dumps(task.payload))
        assert release["outcome"] == task.outcome
        checks = [
            e
            for e in graph.values()
            if e.get("@type") == "AssessAction"
            and e.get("additionalType") == {"@id": DISCLOSURE_CHECK}
            and e["agent"] == {"@id": f"#node-{node}"}
        ]
        assert [(c["name"], c["description"]) for c in checks] == [
            (f"{r.rule}: {'passed' if r.passed else 'failed'}", r.detail) for r in task.rules
        ]
        criteria = [graph[c["instrument"]["@id"]] for c in checks]
        assert [(c["name"], c["value"]) for c in criteria] == [
            (r.rule, r.setting) for r in task.rules
        ]
        signed = (root / "data" / "nodes" / node / "statement.json").exists()
        assert signed == (task.outcome in ("released", "suppressed"))
    assert job.tasks["tre-c"].outcome == "blocked"
    # the TRE's settings, as its policy declares them (the defaults here)
    settings = {r.rule: r.setting for r in job.tasks["tre-a"].rules}
    assert settings["threshold"] == "threshold=10"
    assert settings["perturbation"].startswith("perturbation=cell_key, noise_deviation=3")
    assert job.tasks["tre-a"].outcome in ("released", "suppressed")

    # and the combined result
    assert json.loads((root / "data" / "result.json").read_text()) == json.loads(
        json.dumps(job.combined)
    )


def test_the_package_verifies_against_the_network_ca(net, crosstab, capsys):
    job, package = crosstab
    job_id, nodes = verify_package(package, ca(net))
    assert job_id == job.id
    by_node = {n.node: n for n in nodes}
    assert by_node["tre-a"].statement is not None and by_node["tre-a"].statement.rules_signed
    assert by_node["tre-c"].statement is None

    assert main(["verify-package", str(package), "--ca", str(ca(net))]) == 0
    out = capsys.readouterr().out
    assert f"verified: job {job.id}" in out
    assert "tre-c: blocked, nothing released" in out


def test_altering_one_byte_of_any_file_fails_verification(net, crosstab, tmp_path, capsys):
    _, package = crosstab
    with zipfile.ZipFile(package) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    assert len(members) >= 12
    for name, content in members.items():
        altered = bytearray(content)
        middle = len(altered) // 2
        altered[middle] = (altered[middle] + 1) % 256 or 1
        forged = tmp_path / f"forged-{name.replace('/', '_')}.zip"
        with zipfile.ZipFile(forged, "w") as zf:
            for other, data in members.items():
                zf.writestr(other, bytes(altered) if other == name else data)
        with pytest.raises(PackageInvalid):
            verify_package(forged, ca(net))
    assert main(["verify-package", str(forged), "--ca", str(ca(net))]) == 1
    assert "does NOT verify" in capsys.readouterr().err


def test_a_failed_bag_says_one_thing_not_bagits_own_log_line(net, crosstab, tmp_path, caplog):
    # Given a package one of whose data files (same size) no longer matches its manifest,
    _, package = crosstab
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(package) as zf, zipfile.ZipFile(forged, "w") as out:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename.startswith("data/") and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            out.writestr(info, data)
    caplog.set_level(logging.DEBUG)

    # when it is verified, fedtre says why,
    with pytest.raises(PackageInvalid, match="the bag does not validate"):
        verify_package(forged, ca(net))

    # and the bagit library logs nothing of its own (it would print before fedtre's line).
    assert [r.getMessage() for r in caplog.records if r.name.startswith("bagit")] == []


@pytest.mark.parametrize("change", ["verdict", "setting"])
def test_rules_rewritten_with_fresh_manifests_fail_on_the_signature(
    net, crosstab, tmp_path, change
):
    # An attacker alters a check (its verdict, or the TRE's setting it shows) in the
    # release and the crate alike, and rebuilds the manifests
    _, package = crosstab
    root = unpack(package, tmp_path / "bag")
    release_file = root / "data" / "nodes" / "tre-a" / "release.json"
    release = json.loads(release_file.read_text())
    rule = release["rules"][0]
    if change == "verdict":
        rule["passed"] = not rule["passed"]
    else:
        rule["setting"] = "threshold=3"
    release_file.write_text(json.dumps(release))
    crate_file = root / "data" / "ro-crate-metadata.json"
    crate = json.loads(crate_file.read_text())
    for entity in crate["@graph"]:
        if entity["@id"] == "#check-tre-a-0":
            entity["name"] = f"{rule['rule']}: {'passed' if rule['passed'] else 'failed'}"
            entity["actionStatus"] = (
                "http://schema.org/CompletedActionStatus"
                if rule["passed"]
                else "http://schema.org/FailedActionStatus"
            )
        if entity["@id"] == "#criterion-tre-a-0":
            entity["value"] = rule["setting"]
    crate_file.write_text(json.dumps(crate))
    forged = rebag(root, tmp_path / "forged.zip")

    with pytest.raises(PackageInvalid, match="disclosure checks shown differ"):
        verify_package(forged, ca(net))


def test_parameters_rewritten_with_fresh_manifests_fail_on_the_signature(net, crosstab, tmp_path):
    # An attacker relabels the output as the answer to another question
    _, package = crosstab
    root = unpack(package, tmp_path / "bag")
    request_file = root / "data" / "request.json"
    request = json.loads(request_file.read_text())
    request["parameters"]["rows"] = "diabetes"
    request_file.write_text(json.dumps(request))
    forged = rebag(root, tmp_path / "forged.zip")

    with pytest.raises(PackageInvalid, match="parameters shown differ"):
        verify_package(forged, ca(net))


def test_a_package_does_not_verify_against_another_networks_ca(crosstab, tmp_path):
    _, package = crosstab
    init_network(tmp_path / "other", ["tre-a"], users=())
    with pytest.raises(PackageInvalid, match="not issued by this network's CA"):
        verify_package(package, tmp_path / "other" / "ca" / "ca.pem")


def test_only_the_researcher_view_goes_in(net, tmp_path):
    # Given a correlation, whose node payloads hold model statistics for the coordinator
    job_id = run(net, "correlation", {"columns": ["age", "sbp"]})
    package = tmp_path / "corr.zip"
    assert main(cli(net, "result", str(job_id), "--package", str(package))) == 0
    root = unpack(package, tmp_path / "corr")

    # Then no node release in the package holds them, and every rule is in fixed words
    released = 0
    for node in ("tre-a", "tre-b", "tre-c"):
        release = json.loads((root / "data" / "nodes" / node / "release.json").read_text())
        assert not {"n_model", "means", "cross"} & set(release["payload"])
        assert all(r["detail"] == PLAIN_WORDS[r["rule"]] for r in release["rules"])
        released += release["outcome"] in ("released", "suppressed")
    assert released == 2
    verify_package(package, ca(net))


def test_an_unfinished_job_is_not_packaged(net, tmp_path, capsys):
    net.add_project("manual", auto_approve=())
    with net.client() as client:
        handle = client.submit("count", dataset="cohort", project="manual")
    out = tmp_path / "pending.zip"
    assert main(cli(net, "result", str(handle.id), "--package", str(out))) == 2
    assert "still pending_approval" in capsys.readouterr().err
    assert not out.exists()
