"""The `freshrag` command: up (everything, embedded), serve, worker, publish, sync, eval,
reindex (another embedding model, blue/green), optimize (the embedded index, offline),
prompts (versions and labels; promote a candidate an evaluation found no worse),
mcp (search, answers and documents for agents, over the API), tune (adapt the embedding
model to the corpus; experimental).

One module per group of commands; each registers its commands on the group in `_base`.
"""

from __future__ import annotations

import sys

import click

from freshrag.cli import evaluation, index, mcp, prompts, publishing, service, tuning  # noqa: F401  (registers)
from freshrag.cli._base import cli

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RuntimeError as exc:  # startup problems the user can fix: say so, no traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
