"""Command line: ``ifm demo [--out DIR] [--seed N] [--quick] [--no-progress] [--threads N]``
(also ``python -m ifm demo``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ifm`` console script; returns the exit code."""
    from . import __version__, demo

    parser = argparse.ArgumentParser(prog="ifm", description="ifm-kernels command line")
    parser.add_argument("--version", action="version", version=f"ifm-kernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_demo = sub.add_parser(
        "demo",
        help="train IFM and EFM on Gaussian -> Swiss roll (2-D) and "
        "write figures and a summary table",
    )
    demo.add_arguments(p_demo)
    args = parser.parse_args(argv)
    if args.command != "demo":
        parser.print_help()
        return 2
    words = ["ifm", "demo"] + (sys.argv[2:] if argv is None else list(argv[1:]))
    return demo.main_from_args(args, command=" ".join(words))


if __name__ == "__main__":
    sys.exit(main())
