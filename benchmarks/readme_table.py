"""Put a regenerated benchmark table into README.md between its markers."""

from __future__ import annotations

import re
from pathlib import Path

from neuroplastic.io import write_text

README = Path(__file__).resolve().parent.parent / "README.md"


def update_readme(marker: str, table: str) -> None:
    """Replace what stands between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->``."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {marker} markers")
    write_text(README, pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))
