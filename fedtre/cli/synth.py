"""`fedtre synth`: write synthetic cohorts, one per TRE."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtre.synth import DEFAULT_SEED, FORMATS, PROFILES, TABLE_NAME, write_cohorts


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `synth`."""
    parser = sub.add_parser("synth", help="write synthetic patient cohorts, one per TRE")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--nodes", type=int, default=3, help="number of TREs (default: 3)")
    parser.add_argument("--rows", type=int, default=2000, help="rows per TRE (default: 2000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=handle_synth)


def handle_synth(args: argparse.Namespace) -> int:
    """Write the cohorts and print one line per file."""
    paths = write_cohorts(
        args.out_dir, args.nodes, args.rows, args.seed, args.fmt, overwrite=args.force
    )
    where = f" (table {TABLE_NAME!r})" if args.fmt == "sqlite" else ""
    print(f"Wrote {len(paths)} synthetic cohorts of {args.rows} rows, seed {args.seed}{where}:")
    for index, (node, path) in enumerate(paths.items()):
        profile = PROFILES[index % len(PROFILES)]
        print(f"  {node}  {path}  ({profile.name}: {', '.join(profile.regions)})")
    return 0
