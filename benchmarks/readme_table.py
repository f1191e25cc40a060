"""Put a regenerated benchmark table into README.md between its markers, and keep the
benchmark's results beside it (``benchmarks/results/<name>.json`` and ``.md``)."""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuroplastic.io import write_json, write_text

README = Path(__file__).resolve().parent.parent / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"


def update_readme(marker: str, table: str) -> None:
    """Replace what stands between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->``."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {marker} markers")
    write_text(README, pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))


def publish(name: str, table: str, *, results: dict[str, Any] | None = None, readme: bool = True,
            echo: bool = True, json_path: Path | None = None) -> None:
    """Write ``results/<name>.json`` (when ``results`` is given) and ``results/<name>.md``,
    print the table (``echo``), and with ``readme`` put it between the README's
    ``<name>-benchmark`` markers. With ``json_path`` (``--json``) only write ``results``
    there and print the table: benchmarks/results and the README stay untouched."""
    if json_path is not None:
        write_json(json_path, results)
        print(table)
        return
    if results is not None:
        write_json(RESULTS / f"{name}.json", results)
    write_text(RESULTS / f"{name}.md", table + "\n")
    if echo:
        print(table)
    if readme:
        update_readme(f"{name}-benchmark", table)


def stored_results(name: str) -> dict[str, Any]:
    """``results/<name>.json`` as the benchmark last wrote it."""
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def republish(name: str, render: Callable[[dict[str, Any]], str]) -> None:
    """Re-render a benchmark's tables from its stored results (``--from-json``)."""
    publish(name, render(stored_results(name)), echo=False)


def parse_with_parts(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options of a benchmark with a digits and a Fashion-MNIST part (``--part``,
    ``--quick``, ``--json``, ``--threads``) and parse; ``--quick`` needs ``--json``."""
    parser.add_argument("--part", choices=("all", "digits", "fashion"), default="all")
    parser.add_argument("--quick", action="store_true",
                        help="a one-minute Fashion-MNIST run at toy sizes (needs --json)")
    parser.add_argument("--json", type=Path, help="write the Fashion-MNIST results here, not to "
                        "benchmarks/results, and leave the README alone")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick and args.json is None:
        parser.error("--quick writes only to --json PATH")
    return args


def run_parts(args: argparse.Namespace, *, digits: Callable[[], None], fashion: Callable[[], None]) -> None:
    """Run the parts ``--part`` and ``--quick`` ask for: the Fashion-MNIST part alone
    (``--quick``, ``--part fashion``), the small data sets' alone (``--part digits``), or
    both, the Fashion-MNIST part skipped with one line when its files are not installed."""
    from neuroplastic.data.idx import is_installed

    if args.quick or args.part == "fashion":
        fashion()
        return
    digits()
    if args.part == "all":
        if is_installed("fashion-mnist"):
            fashion()
        else:
            print("Fashion-MNIST part skipped: the files are not installed (make data)", flush=True)


def mean_std(values: list[float], *, scale: float = 1.0, decimals: int = 3) -> str:
    """``mean ± population std`` of ``values`` times ``scale``."""
    mean, std = statistics.fmean(values) * scale, statistics.pstdev(values) * scale
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"
