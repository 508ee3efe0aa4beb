"""The public dataset catalogue, served without authentication on the ops HTTP server.

Like the Data Use Register (coordinator.applications.register_pages), anyone may read
it: each node's datasets that its TRE's operator described, with what the operator
declared and nothing else (fedtre.catalogue.entry.public_catalogue owns the shape).
"""

from __future__ import annotations

from coordinator.store.store import Store
from fedtre.catalogue.entry import CatalogueEntry, public_catalogue
from fedtre.ops_http import Page


def catalogue_pages(store: Store) -> dict[str, Page]:
    """/catalogue.json, read from the nodes' last advertisements at each request."""

    def catalogue() -> tuple[str, bytes]:
        entries = [
            CatalogueEntry(node=node.node_id, online=None, dataset=dataset)
            for node in store.nodes().values()
            for dataset in node.datasets
        ]
        return "application/json; charset=utf-8", public_catalogue(entries)

    return {"/catalogue.json": catalogue}
