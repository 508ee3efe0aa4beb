"""Write a job's release package: a Five Safes RO-Crate (0.4) in a BagIt bag, zipped.

The bag's payload (data/) is the crate:

    data/ro-crate-metadata.json     the crate: request, checks, signatures, result
    data/request.json               who asked what, in which project, with which parameters
    data/result.json                the combination across nodes
    data/nodes/<node>/release.json  the node's outcome, released payload and disclosure rules
    data/nodes/<node>/statement.json, signature.bin, certificate.pem
                                    the node agent's signed provenance of that release

Only what the researcher may see goes in: the job as the coordinator shows it to them
(payloads without model statistics, rules in fixed words, no review details), so the
package can be shared wherever the result itself may go. The crate is written with
ro-crate-py and the bag with bagit-python (SHA-512 manifests), both maintained libraries
of the RO-Crate and Library of Congress communities.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedtre.errors import InvalidRequest
from fedtre.files import write_private

if TYPE_CHECKING:
    from fedtre.client import JobStatus, NodeResult

PROFILE = "https://w3id.org/5s-crate/0.4"
DISCLOSURE_CHECK = "https://w3id.org/shp#DisclosureCheck"
SIGN_OFF = "https://w3id.org/shp#SignOff"
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
RELEASE_FILE = "release.json"
STATEMENT_FILE = "statement.json"
SIGNATURE_FILE = "signature.bin"
CERTIFICATE_FILE = "certificate.pem"


def check_id(node: str, index: int) -> str:
    """The crate id of a node's index-th disclosure check (AssessAction)."""
    return f"#check-{node}-{index}"


def write_package(job: JobStatus, out: Path) -> Path:
    """Write job's release package to out (a .zip, mode 0600) and return out.

    Raises InvalidRequest when the job has not finished (nothing is final to package).
    """
    if not job.finished:
        raise InvalidRequest(
            f"job {job.id} is still {job.state}; package it once it has finished "
            f"(`fedtre result {job.id} --wait`)"
        )
    with tempfile.TemporaryDirectory(prefix="fedtre-package-") as tmp:
        bag_dir = Path(tmp) / "bag"
        _write_crate(job, Path(tmp), bag_dir)
        _make_bag(bag_dir, job)
        archive = Path(tmp) / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in bag_dir.rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(bag_dir).as_posix())
        write_private(out, archive.read_bytes())
    return out


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _request(job: JobStatus) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "analysis": job.analysis,
        "dataset": job.dataset,
        "parameters": job.params,
        "project": job.project,
        "nodes": list(job.nodes),
        "submitted_by": job.submitted_by,
        "approved_by": list(job.approved_by),
        "state": job.state,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.updated_at.isoformat(),
    }


def _release(task: NodeResult) -> dict[str, Any]:
    return {
        "node": task.node,
        "task_id": task.task_id,
        "outcome": task.outcome,
        "payload": task.payload,
        "rules": [
            {"rule": r.rule, "passed": r.passed, "detail": r.detail, "setting": r.setting}
            for r in task.rules
        ],
        "error": task.error,
    }


def _write_crate(job: JobStatus, work: Path, crate_dir: Path) -> None:
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    sources = work / "sources"
    sources.mkdir()
    crate = ROCrate()

    def add_file(dest: str, content: str | bytes, **properties: Any) -> Any:
        source = sources / dest.replace("/", "__")
        if isinstance(content, str):
            source.write_text(content, encoding="utf-8")
        else:
            source.write_bytes(content)
        return crate.add_file(source, dest_path=dest, properties=properties)

    def add(entity_id: str, **properties: Any) -> Any:
        return crate.add(ContextEntity(crate, entity_id, properties=properties))

    root = crate.root_dataset
    root["name"] = f"fedtre job {job.id}: {job.analysis} of {job.dataset}"
    root["description"] = (
        "A federated analysis released by the Trusted Research Environments below, with "
        "every disclosure check each applied and each node agent's signature."
    )
    root["conformsTo"] = {"@id": PROFILE}
    add(PROFILE, **{"@type": "Profile", "name": "Five Safes RO-Crate profile"})

    project = add(f"#project-{job.project}", **{"@type": "Project", "name": job.project})
    root["sourceOrganization"] = {"@id": project.id}
    person = add(
        f"#person-{job.submitted_by}",
        **{"@type": "Person", "name": job.submitted_by, "memberOf": {"@id": project.id}},
    )
    analysis = add(
        f"#analysis-{job.analysis}",
        **{"@type": "SoftwareApplication", "name": f"fedtre analysis {job.analysis}"},
    )
    params = [
        add(
            f"#parameter-{key}",
            **{"@type": "PropertyValue", "name": key, "value": json.dumps(value, sort_keys=True)},
        )
        for key, value in sorted(job.params.items())
    ]
    request = add_file(
        REQUEST_FILE,
        _json(_request(job)),
        name="The request: analysis, dataset, parameters, project, requester and approvers",
        encodingFormat="application/json",
    )
    result = add_file(
        RESULT_FILE,
        _json(job.combined or {}),
        name="The combined result across nodes",
        encodingFormat="application/json",
    )
    mentions: list[dict[str, str]] = []
    outputs = [{"@id": result.id}]
    for name in job.approved_by:
        approver = add(f"#person-{name}", **{"@type": "Person", "name": name})
        sign_off = add(
            f"#signoff-{name}",
            **{
                "@type": "AssessAction",
                "additionalType": {"@id": SIGN_OFF},
                "name": f"Approval of job {job.id} by {name}: approved",
                "agent": {"@id": approver.id},
                "object": {"@id": request.id},
                "actionStatus": COMPLETED,
            },
        )
        mentions.append({"@id": sign_off.id})

    for node, task in sorted(job.tasks.items()):
        tre = add(f"#node-{node}", **{"@type": "Organization", "name": f"TRE node {node}"})
        release = add_file(
            f"nodes/{node}/{RELEASE_FILE}",
            _json(_release(task)),
            name=f"Release of node {node}: {task.outcome}",
            encodingFormat="application/json",
            publisher={"@id": tre.id},
        )
        outputs.append({"@id": release.id})
        for i, rule in enumerate(task.rules):
            # The criterion as this TRE applied it: the rule family and its setting.
            criterion = add(
                f"#criterion-{node}-{i}",
                **{
                    "@type": "PropertyValue",
                    "name": rule.rule,
                    "value": rule.setting,
                    "description": rule.detail,
                },
            )
            check = add(
                check_id(node, i),
                **{
                    "@type": "AssessAction",
                    "additionalType": {"@id": DISCLOSURE_CHECK},
                    "name": f"{rule.rule}: {'passed' if rule.passed else 'failed'}",
                    "description": rule.detail,
                    "instrument": {"@id": criterion.id},
                    "object": {"@id": release.id},
                    "agent": {"@id": tre.id},
                    "actionStatus": COMPLETED if rule.passed else FAILED,
                },
            )
            mentions.append({"@id": check.id})
        if task.provenance is not None:
            signed = {"about": {"@id": release.id}, "publisher": {"@id": tre.id}}
            add_file(
                f"nodes/{node}/{STATEMENT_FILE}",
                task.provenance.statement,
                name=f"Node {node}'s signed statement about its release",
                encodingFormat="application/json",
                **signed,
            )
            add_file(
                f"nodes/{node}/{SIGNATURE_FILE}",
                task.provenance.signature,
                name=f"ECDSA (SHA-256) signature of node {node} over its statement",
                encodingFormat="application/octet-stream",
                **signed,
            )
            add_file(
                f"nodes/{node}/{CERTIFICATE_FILE}",
                task.provenance.certificate,
                name=f"Node {node}'s certificate, issued by the network CA",
                encodingFormat="application/x-pem-file",
                **signed,
            )

    action = add(
        f"#request-{job.id}",
        **{
            "@type": "CreateAction",
            "name": f"Run {job.analysis} on {job.dataset} for project {job.project}",
            "agent": {"@id": person.id},
            "instrument": {"@id": analysis.id},
            "object": [{"@id": request.id}, *({"@id": p.id} for p in params)],
            "result": outputs,
            "startTime": job.created_at.isoformat(),
            "endTime": job.updated_at.isoformat(),
            "actionStatus": COMPLETED if job.state in ("completed", "partial") else FAILED,
        },
    )
    root["mentions"] = [{"@id": action.id}, *mentions]
    crate.write(crate_dir)
    shutil.rmtree(sources)


def _make_bag(bag_dir: Path, job: JobStatus) -> None:
    import bagit

    bagit.make_bag(
        str(bag_dir),
        bag_info={"External-Description": f"fedtre job {job.id} release package"},
        checksums=["sha512"],
    )
