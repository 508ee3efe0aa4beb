"""A project names only nodes, datasets and analyses the network has (issue 17, item 9):
the admin use case against a real SQLite store, before and after agents register."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.admin import Admin
from coordinator.domain.governance import Project, ProjectChanges
from coordinator.store.store import Store
from fedtre.analyses.base import DatasetSchema
from fedtre.errors import InvalidRequest
from fedtre.identity.peer import Identity

ADMIN = Identity("admin", "admin")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'coordinator.sqlite'}")


@pytest.fixture
def admin(store) -> Admin:
    admin = Admin(store, clock=lambda: NOW)
    admin.create_user(ADMIN, "alice", "researcher")
    return admin


def project(name: str, nodes=("tre-a",), datasets=("cohort",), analyses=("count",)) -> Project:
    return Project(
        name=name,
        description="",
        members=("alice",),
        nodes=nodes,
        datasets=datasets,
        analyses=analyses,
        approval_expires_at=NOW + timedelta(days=30),
        approvals_required=1,
        auto_approve=(),
        created_at=NOW,
        created_by="",
    )


def register(store: Store, node: str, datasets: dict[str, dict[str, str]], analyses) -> None:
    schemas = [DatasetSchema(name, columns) for name, columns in datasets.items()]
    store.node_connected(node, schemas, list(analyses), NOW, "c-" + node)


def test_before_any_agent_registers_one_message_says_to_start_them_first(admin):
    with pytest.raises(InvalidRequest) as refused:
        admin.create_project(ADMIN, project("early", nodes=("tre-a", "tre-b")))

    message = str(refused.value)
    assert message.count("no agent has registered") == 1
    assert "'tre-a', 'tre-b'" in message and "start the TREs' agents" in message
    assert admin.governance.project("early") is None


def test_each_unknown_name_is_listed_with_what_exists(admin, store):
    register(store, "tre-a", {"cohort": {"age": "integer"}}, ["count", "summary"])
    register(store, "tre-b", {"cohort": {"age": "integer"}, "registry": {"x": "float"}}, ["count"])

    with pytest.raises(InvalidRequest) as refused:
        admin.create_project(
            ADMIN,
            project("typo", nodes=("tre-aa", "tre-a", "tre-b"), datasets=("cohrt", "registry"),
                    analyses=("count", "crosstab")),
        )  # fmt: skip

    lines = str(refused.value).splitlines()[1:]
    assert lines == [
        "- unknown node 'tre-aa' (did you mean 'tre-a'?); registered nodes: tre-a, tre-b",
        "- no node of the project (tre-a, tre-b) offers dataset 'cohrt' (did you mean "
        "'cohort'?); they offer: cohort, registry",
        "- no node of the project (tre-a, tre-b) serves analysis 'crosstab'; they serve: "
        "count, summary",
    ]
    assert admin.governance.project("typo") is None


def test_a_project_of_what_exists_is_created_and_updates_are_checked_too(admin, store):
    register(store, "tre-a", {"cohort": {"age": "integer"}}, ["count"])

    made = admin.create_project(ADMIN, project("good"))

    assert made.nodes == ("tre-a",)
    with pytest.raises(InvalidRequest, match="dataset 'other'"):
        admin.update_project(ADMIN, "good", ProjectChanges(datasets=("other",)))
    assert admin.governance.project("good").datasets == ("cohort",)
    # a change that leaves nodes, datasets and analyses alone is not re-checked
    changed = admin.update_project(ADMIN, "good", ProjectChanges(description="renamed"))
    assert changed.description == "renamed"
