"""The client subcommands of ``resumable-streams``: create, append, tail, head, delete.

Each lives in its own module with an ``add_parser(sub)`` that registers it; ``serve`` stays in
:mod:`resumable_streams.cli`. Shared pieces (errors -> exit codes, progress) are in ``_common``.
"""

from __future__ import annotations

import argparse

from . import append, create, delete, head, tail

__all__ = ["add_client_commands"]


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register every client subcommand on ``sub``."""
    for module in (create, append, tail, head, delete):
        module.add_parser(sub)
