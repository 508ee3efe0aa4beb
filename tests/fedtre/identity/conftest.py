"""Shared networks for the identity tests, issued once per session."""

from __future__ import annotations

import pytest

from fedtre.identity.ca import NetworkPaths, init_network


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> NetworkPaths:
    """A network that tests only read: never issue into it."""
    return init_network(tmp_path_factory.mktemp("net") / "net", ["tre-a", "tre-b", "tre-c"])


@pytest.fixture(scope="session")
def other_network(tmp_path_factory: pytest.TempPathFactory) -> NetworkPaths:
    """A second, unrelated network with the same names: its certificates must not work."""
    return init_network(tmp_path_factory.mktemp("other") / "net", ["tre-a"])
