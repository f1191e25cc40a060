"""No file in ``src/`` decides anything by comparing a method's name with a string: what a
method is, needs or can do is in its registry record and its class (capability flags such as
``baseline``, ``needs``, ``own_network``, ``prunes_trained``, ``builds_published_d``), so a
method registered from a plug-in gets the same treatment as a built-in one."""

from __future__ import annotations

import re
from pathlib import Path

from neuroplastic import registry

SRC = Path(__file__).resolve().parent.parent / "src" / "neuroplastic"


def name_comparisons() -> list[str]:
    names = sorted({entry.name for entry in registry.available()}, key=len, reverse=True)
    quoted = "|".join(re.escape(name) for name in names)
    compare = re.compile(
        rf"""(==|!=)\s*["']({quoted})["']"""  # x == "ssd-auto"
        rf"""|["']({quoted})["']\s*(==|!=|in\b|not in\b)"""  # "retrain" in compare
        rf"""|\b(in|not in)\s*[(\[{{][^)\]}}]*["']({quoted})["']""")  # x in ("na", "na-ksd")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = re.sub(r"\bfor\s+[\w, ()]+?\s+in\b", "for-each", line.split("#", 1)[0])  # iteration
            if compare.search(code):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    return found


def test_no_method_name_is_compared_with_a_string_outside_the_registry():
    assert name_comparisons() == []


def test_the_check_finds_a_name_comparison(tmp_path, monkeypatch):
    # the grep itself is tested: a file with the comparisons it must catch
    planted = tmp_path / "neuroplastic"
    planted.mkdir()
    (planted / "bad.py").write_text('if method == "ssd-auto":\n    pass\n'
                                    'ok = "retrain" in compare\n'
                                    'x = rule in ("disinhibitory", "softhebb")\n'
                                    'for name in ("norm", "source"):\n    pass\n')  # iteration is fine
    monkeypatch.setitem(globals(), "SRC", planted)
    assert [hit.split(":")[1] for hit in name_comparisons()] == ["1", "3", "4"]
