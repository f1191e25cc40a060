"""The command line's entry point: the ``neuroplastic`` console script, ``python -m
neuroplastic`` and ``torchrun --nproc-per-node N -m neuroplastic``."""

import sys

from neuroplastic.interrupts import interrupts_outside_imports


def run() -> None:
    """The command line of :mod:`neuroplastic.cli` under the Ctrl-C guard from its first
    import on (typer and rich load in it); a Ctrl-C before the command line could report it
    is ``interrupted``, exit code 130."""
    try:
        with interrupts_outside_imports():
            from neuroplastic.cli import run as command_line

            command_line()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
