"""Check a release package: its BagIt manifests, and every node's signature against the CA.

A package verifies when (1) the bag is complete and every file matches its SHA-512 in
the manifests, (2) every released node output carries a signature by that node's
certificate, issued by the network CA given (never one inside the package), over
exactly the payload and disclosure rules in the package, for this job, and (3) the
crate's disclosure checks (AssessActions) say what the signed rules say.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fedtre.errors import FedtreError
from fedtre.identity.provenance import Provenance, ProvenanceError, Statement, verify
from fedtre.package.build import (
    CERTIFICATE_FILE,
    COMPLETED,
    RELEASE_FILE,
    REQUEST_FILE,
    SIGNATURE_FILE,
    STATEMENT_FILE,
    check_id,
)

# Outcomes that release something, and so must be signed.
RELEASING = frozenset({"released", "suppressed"})
# A package is a handful of JSON files; refuse archives that expand beyond this.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


class PackageInvalid(FedtreError):
    """The package is not intact, or a node's signature does not hold for what it shows."""


@dataclass(frozen=True)
class NodeCheck:
    """One node's part of a verified package: its outcome and, if it released, the signed statement."""

    node: str
    outcome: str
    statement: Statement | None


def verify_package(package: Path, ca: Path) -> tuple[int, list[NodeCheck]]:
    """Return the job id and each node's check; raise PackageInvalid saying what fails.

    ca: the network CA certificate (ca.pem), the only trust anchor used.
    """
    try:
        ca_pem = ca.read_bytes()
    except OSError as exc:
        raise PackageInvalid(f"cannot read the CA certificate {ca} ({exc.strerror})") from None
    with tempfile.TemporaryDirectory(prefix="fedtre-verify-") as tmp:
        root = Path(tmp)
        _unzip(package, root)
        _check_bag(root)
        data = root / "data"
        request = _load(data / REQUEST_FILE)
        job_id = request.get("job_id")
        if not isinstance(job_id, int):
            raise PackageInvalid(f"{REQUEST_FILE} names no job")
        crate = _load(data / "ro-crate-metadata.json")
        graph = {e.get("@id"): e for e in crate.get("@graph", []) if isinstance(e, dict)}
        checks = []
        nodes = data / "nodes"
        for folder in sorted(nodes.iterdir() if nodes.is_dir() else []):
            checks.append(_check_node(folder, request, graph, ca_pem))
        if sorted(c.node for c in checks) != sorted(request.get("nodes", [])):
            raise PackageInvalid("the package does not hold a release for every node of the job")
        return job_id, checks


def _unzip(package: Path, root: Path) -> None:
    try:
        with zipfile.ZipFile(package) as zf:
            members = zf.infolist()
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise PackageInvalid("the package expands to more than a release package can hold")
            for member in members:
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise PackageInvalid(f"the package holds an unsafe path {member.filename!r}")
            zf.extractall(root)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageInvalid(f"{package} is not a readable zip file ({exc})") from None


def _check_bag(root: Path) -> None:
    import bagit

    # bagit logs each problem it finds as well as raising it: the one message the user
    # reads is PackageInvalid's.
    with _silenced("bagit"):
        _validate_bag(bagit, root)


@contextlib.contextmanager
def _silenced(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _validate_bag(bagit: Any, root: Path) -> None:
    try:
        bag = bagit.Bag(str(root))
        if "sha512" not in bag.algorithms:
            raise PackageInvalid("the bag has no SHA-512 manifest")
        bag.validate()
    except bagit.BagError as exc:
        raise PackageInvalid(f"the bag does not validate: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageInvalid(f"the bag's manifests cannot be read ({exc})") from None


def _load(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackageInvalid(f"{path.name} is missing or not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PackageInvalid(f"{path.name} is not a JSON object")
    return value


@dataclass(frozen=True)
class _Rule:
    rule: str
    passed: bool
    detail: str
    setting: str


def _check_node(
    folder: Path, request: dict[str, Any], graph: dict[Any, Any], ca_pem: bytes
) -> NodeCheck:
    node = folder.name
    release = _load(folder / RELEASE_FILE)
    try:
        rules = [
            _Rule(str(r["rule"]), bool(r["passed"]), str(r["detail"]), str(r.get("setting", "")))
            for r in release["rules"]
        ]
        outcome, payload, task_id = release["outcome"], release["payload"], release["task_id"]
    except (KeyError, TypeError) as exc:
        raise PackageInvalid(f"node {node}'s {RELEASE_FILE} is malformed ({exc})") from None
    _check_crate_checks(node, rules, graph)
    statement_file = folder / STATEMENT_FILE
    if not statement_file.exists():
        if outcome in RELEASING:
            raise PackageInvalid(f"node {node} released an output that carries no signature")
        return NodeCheck(node, outcome, None)
    signed = Provenance(
        agent_version="",
        dataset_version="",
        statement=statement_file.read_bytes(),
        signature=(folder / SIGNATURE_FILE).read_bytes(),
        certificate=(folder / CERTIFICATE_FILE).read_bytes(),
    )
    try:
        content = json.loads(signed.statement)
        signed = Provenance(
            str(content.get("agent_version", "")),
            str(content.get("dataset_version", "")),
            signed.statement,
            signed.signature,
            signed.certificate,
        )
        params = request.get("parameters")
        if not isinstance(params, dict):
            raise PackageInvalid(f"{REQUEST_FILE} holds no parameters")
        statement = verify(
            signed, ca_pem, node=node, task_id=task_id, payload=payload, rules=rules, params=params
        )
    except (ProvenanceError, ValueError, AttributeError) as exc:
        raise PackageInvalid(f"node {node}: {exc}") from None
    if not statement.rules_signed:
        raise PackageInvalid(
            f"node {node}'s signature does not cover its disclosure checks (an older agent)"
        )
    asked = (request.get("job_id"), request.get("project"), request.get("analysis"))
    if (statement.job_id, statement.project, statement.analysis) != asked or (
        statement.dataset != request.get("dataset") or statement.outcome != outcome
    ):
        raise PackageInvalid(f"node {node} signed a release of another job or outcome")
    return NodeCheck(node, outcome, statement)


def _check_crate_checks(node: str, rules: list[_Rule], graph: dict[Any, Any]) -> None:
    """The crate's AssessActions for node must state exactly the rules in its release."""
    for i, rule in enumerate(rules):
        action = graph.get(check_id(node, i))
        expected = f"{rule.rule}: {'passed' if rule.passed else 'failed'}"
        instrument = action.get("instrument") if isinstance(action, dict) else None
        criterion = graph.get(instrument.get("@id")) if isinstance(instrument, dict) else None
        criterion = criterion if isinstance(criterion, dict) else {}
        if (
            not isinstance(action, dict)
            or action.get("name") != expected
            or action.get("description") != rule.detail
            or (action.get("actionStatus") == COMPLETED) != rule.passed
            or (criterion.get("name"), criterion.get("value")) != (rule.rule, rule.setting)
        ):
            raise PackageInvalid(
                f"the crate's disclosure check {i} of node {node} differs from its signed release"
            )
    if check_id(node, len(rules)) in graph:
        raise PackageInvalid(f"the crate lists a disclosure check node {node} did not sign")
