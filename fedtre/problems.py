"""Saying each problem once: one line per message, naming every node that has it."""

from __future__ import annotations

from collections.abc import Iterable


def problem_lines(problems: Iterable[tuple[str, str]]) -> list[str]:
    """Lines for (node, message) pairs, in first-seen order, each message once.

    A message several nodes share becomes "tre-a, tre-b: message"; one without a node
    stays as it is.
    """
    nodes_by_message: dict[str, list[str]] = {}
    for node, message in problems:
        nodes = nodes_by_message.setdefault(message, [])
        if node and node not in nodes:
            nodes.append(node)
    return [
        f"{', '.join(nodes)}: {message}" if nodes else message
        for message, nodes in nodes_by_message.items()
    ]
