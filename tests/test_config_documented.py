"""Every environment variable the code reads is in the README's configuration table (the one place
an operator looks), and the table names nothing the code no longer reads."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\b(LIKENESS_[A-Z0-9_]*[A-Z0-9])\b")


def names_in_code() -> set[str]:
    found: set[str] = set()
    for path in list((ROOT / "services").rglob("*.py")) + list((ROOT / "model_repository").rglob("*.py")):
        if "proto_gen" not in path.parts:
            found |= set(NAME.findall(path.read_text()))
    return found


def names_in_readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration"):]
    table = table[:table.index("\n## ", 1)]
    return set(NAME.findall(table))


def test_every_setting_the_code_reads_is_documented() -> None:
    code = names_in_code()
    assert len(code) > 20  # the scan works
    missing = sorted(code - names_in_readme_table())
    assert not missing, f"add these to README.md's Configuration table: {missing}"


def test_the_table_documents_only_settings_the_code_reads() -> None:
    stale = sorted(names_in_readme_table() - names_in_code())
    assert not stale, f"README.md documents settings nothing reads: {stale}"
