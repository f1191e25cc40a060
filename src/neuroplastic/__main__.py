"""``python -m neuroplastic`` (and ``torchrun --nproc-per-node N -m neuroplastic``): the
command line."""

from neuroplastic.cli import run

if __name__ == "__main__":
    run()
