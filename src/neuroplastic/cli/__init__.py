"""Command line: ``neuroplastic list``, ``forget`` (and ``forget skill``), ``sparse``, ``skills``,
``continual``, ``learn``, ``adapt``, ``shift``.

One error path: every usage error, bad value, bad file and library error is one
line on stderr starting ``error:`` and exit code 2, with no traceback (set
``NEUROPLASTIC_DEBUG=1`` to see it); Ctrl-C prints ``interrupted`` and exits 130. Under
``torchrun`` every rank runs the command (:mod:`neuroplastic.cli.group`): rank 0 alone
prints and writes; a failure is one line.
The command modules import torch and the heavy libraries only inside their
commands, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import TyperException

from neuroplastic.cli.adapt import adapt_app, shift_app
from neuroplastic.cli.continual import continual_app
from neuroplastic.cli.forget import forget_app
from neuroplastic.cli.learn import learn_app
from neuroplastic.cli.output import console, say_error
from neuroplastic.cli.skills import skills_app
from neuroplastic.cli.sparse import sparse_app
from neuroplastic.errors import NeuroplasticError, first_line

INTERRUPTED = 130
USAGE = 2

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Plasticity operations on trained networks: forget, sparsify, consolidate, "
                       "learn with local rules, adapt. Every command takes --threads N (torch's "
                       "CPU threads; default: one for models below 2M parameters, every core "
                       "above), and runs under torchrun: torchrun --nproc-per-node N -m "
                       "neuroplastic <command> ...")
app.add_typer(forget_app, name="forget", help="Remove data or skills from a trained model.")
app.add_typer(sparse_app, name="sparse", help="Train or prune to a target sparsity; export.")
app.add_typer(skills_app, name="skills", help="The demo language model of skill unlearning.")
app.add_typer(continual_app, name="continual",
              help="Learn tasks one after another without forgetting the old ones.")
app.add_typer(learn_app, name="learn", help="Train with a local learning rule, beside backprop.")
app.add_typer(adapt_app, name="adapt", help="Adapt a classifier to corrupted inputs at test time.")
app.add_typer(shift_app, name="shift", help="Learn through concept shift with a homeostatic learning rate.")


@app.command("list")
def list_methods(kind: str | None = typer.Option(None, help="Only this kind (e.g. forget)."),
                 json_out: bool = typer.Option(False, "--json", help="Print JSON instead.")) -> None:
    """Print every registered method, one line each (kind, name, what it does)."""
    from neuroplastic import registry
    from neuroplastic.io import to_json

    entries = registry.available(kind)
    if json_out:
        sys.stdout.write(to_json([e.record() for e in entries]) + "\n")
        return
    name_width = max(len(e.name) for e in entries) if entries else 0
    for entry in entries:
        tag = " (baseline)" if entry.baseline else ""
        sys.stdout.write(f"{entry.kind:<9} {entry.name:<{name_width}}  {registry.one_line(entry)}{tag}\n")


def interrupted(hint: str | None = None) -> int:
    """Report Ctrl-C in one line; exit code 130 like a shell."""
    console.print("interrupted" + (f"; {hint}" if hint else ""), highlight=False, soft_wrap=True)
    return INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns every failure into one line and an exit code."""
    from neuroplastic.cli.group import Ended, first_failure, torchrun_group
    from neuroplastic.cli.output import take_interrupt_hint
    from neuroplastic.cli.threads import start_threads, take_threads
    from neuroplastic.interrupts import interrupts_outside_imports

    try:
        argv = take_threads(list(sys.argv[1:] if argv is None else argv))
        start_threads()
        with interrupts_outside_imports(), torchrun_group() as outcome:
            code = outcome.code = int(app(args=argv, standalone_mode=False) or 0)
    except KeyboardInterrupt:
        return interrupted(take_interrupt_hint())
    except Ended:  # torchrun ended this rank because another one failed (and said why)
        return USAGE
    except (NeuroplasticError, TyperException, typer.Abort) as err:
        message = err.format_message() if isinstance(err, TyperException) else str(err)
        return say_error(message or "aborted", USAGE) if first_failure() else USAGE
    except Exception as err:  # a library or system error: one line, the traceback on request
        if os.environ.get("NEUROPLASTIC_DEBUG"):
            raise
        if not first_failure():  # under torchrun another rank failed first and said why
            return USAGE
        return say_error(f"{type(err).__name__}: {first_line(err)} (NEUROPLASTIC_DEBUG=1 shows the "
                         "traceback)", USAGE)
    if code == INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130)
        return interrupted(take_interrupt_hint())
    return int(code or 0)


def run() -> None:
    """:func:`main` with its exit (the console script, :func:`neuroplastic.__main__.run`, calls
    this under the Ctrl-C guard; the current folder is importable, as with ``python -m``, so
    ``--model-factory mymodels:build`` finds ``./mymodels.py``)."""
    from neuroplastic.cli.group import end_process

    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C before the app started, e.g. while importing
        code = interrupted()
    end_process(code)
