"""`fedtre demo`: run a demo network of a coordinator and three agents on synthetic data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run a demo network (coordinator + 3 agents) on synthetic data"
    )
    demo.add_argument(
        "--rows", type=int, default=2000, help="synthetic people per TRE (default 2000)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the network's folder for inspection"
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from fedtre.demo import run_demo

    run_demo(rows=args.rows, keep=args.keep)
    return 0
