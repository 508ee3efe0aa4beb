"""The `fedtre` command: one entry point for every role."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fedtre.errors import FedtreError

# Each module adds its sub-commands through register(subparsers); a handler takes the
# parsed args and returns the process exit code.
_COMMAND_MODULES: tuple[str, ...] = (
    "ca", "synth", "services", "jobs", "status", "admin", "applications", "demo",
    "catalogue", "package", "portal",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="fedtre", description="Federated analysis across Trusted Research Environments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"fedtre.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FedtreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
