"""Command line: ``neuroplastic list``, ``forget`` (and ``forget skill``), ``sparse``, ``skills``."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from neuroplastic import registry
from neuroplastic.cli.forget import forget_app
from neuroplastic.cli.skills import skills_app
from neuroplastic.cli.sparse import sparse_app
from neuroplastic.errors import NeuroplasticError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Plasticity operations on trained networks: forget, sparsify, consolidate.")
app.add_typer(forget_app, name="forget", help="Remove data or skills from a trained model.")
app.add_typer(sparse_app, name="sparse", help="Train or prune to a target sparsity; export.")
app.add_typer(skills_app, name="skills", help="The demo language model of skill unlearning.")
console = Console(stderr=True)


@app.command("list")
def list_methods(kind: str | None = typer.Option(None, help="Only this kind (e.g. forget).")) -> None:
    """Print every registered method, one line each."""
    table = Table("kind", "name", "summary", box=None)
    for entry in registry.available(kind):
        table.add_row(entry.kind, entry.name, entry.summary)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app; bad input prints one line to stderr and exits 2."""
    try:
        app(args=argv, standalone_mode=False)
    except NeuroplasticError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        return 1
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return 0


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
