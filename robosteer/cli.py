"""The ``robosteer`` command line: a thin layer over the library.

Each subsystem keeps its own commands in a small ``cli`` module exposing
``register(subparsers)``; this file only gathers them. Those modules must stay
cheap to import (heavy imports happen inside the command functions), so that
``robosteer --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "robosteer.models.cli",
    "robosteer.sim.cli",
    "robosteer.app.cli",  # evaluate (the simulator's command, with the application's policy loading), finetune, pretrain
    "robosteer.circuits.cli",
    "robosteer.app.study",
    "robosteer.app.study_grid",  # study-grid: each study method's learning rate, chosen on validation seeds
    "robosteer.app.study_report",
    "robosteer.app.explain_episode",  # explain: one episode, explained step by step, as an HTML viewer
)


def configure_logging(verbose: bool = False) -> None:
    """The logging every robosteer entry point uses: INFO (DEBUG when verbose), one line per record.

    PyOpenGL logs a missing OpenGL_accelerate at INFO when the simulator first renders; that line
    says nothing to a user, so the ``OpenGL`` logger is held at WARNING unless verbose.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("OpenGL").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robosteer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith("robosteer"):
                continue  # that subsystem is not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"robosteer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
