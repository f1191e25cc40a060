"""How fast the library and the command line start: ``import neuroplastic``, ``neuroplastic
--help``, a one-line usage error, and ``import torch`` for scale. Each is a fresh process,
timed wall-clock; median and best of ``--repeats`` runs. Targets: import <= 1.0 s, --help
<= 1.5 s on a 2-core machine."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from readme_table import publish

SCRIPT = str(Path(sys.executable).with_name("neuroplastic"))
COMMANDS = {
    "python -c 'import neuroplastic'": [sys.executable, "-c", "import neuroplastic"],
    "neuroplastic --help": [SCRIPT, "--help"],
    "neuroplastic forget --epochs 0 (one-line error)": [SCRIPT, "forget", "--epochs", "0"],
    "neuroplastic sparse train --bogus (usage error)": [SCRIPT, "sparse", "train", "--bogus"],
    "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
}
TARGETS = {"python -c 'import neuroplastic'": 1.0, "neuroplastic --help": 1.5}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start


def markdown(results: dict) -> str:
    lines = ["| command | median (s) | best (s) | target (s) | met |", "|---|---|---|---|---|"]
    for name, row in results["commands"].items():
        target = TARGETS.get(name)
        met = "—" if target is None else ("yes" if row["median"] <= target else "**no**")
        lines.append(f"| `{name}` | {row['median']:.3f} | {row['best']:.3f} | "
                     f"{'—' if target is None else f'{target:.1f}'} | {met} |")
    lines.append("")
    lines.append(f"{results['repeats']} fresh processes each, {results['machine']}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    timed(COMMANDS["python -c 'import torch' (for scale)"])  # warm the file cache once
    commands = {}
    for name, command in COMMANDS.items():
        times = [timed(command) for _ in range(args.repeats)]
        commands[name] = {"median": statistics.median(times), "best": min(times), "all": times}
        print(f"{name:55s} median {commands[name]['median']:.3f}s best {commands[name]['best']:.3f}s")
    results = {"commands": commands, "repeats": args.repeats,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    publish("startup", markdown(results), results=results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
