"""Writes docs/configuration.md from the settings registry in services/common/config.py.

    .venv/bin/python scripts/gen_config_doc.py           # rewrite docs/configuration.md
    .venv/bin/python scripts/gen_config_doc.py --check   # exit 1 if it is not what this would write

tests/test_config_documented.py fails when the file differs from render(): change a setting in the
registry, then run this.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.common.config import SETTINGS, Setting  # noqa: E402

OUT = ROOT / "docs" / "configuration.md"
COMMAND = ".venv/bin/python scripts/gen_config_doc.py"

HEADER = f"""\
# Configuration

<!-- Generated from services/common/config.py by scripts/gen_config_doc.py; do not edit by hand.
     Regenerate: {COMMAND} -->

Environment variables, with defaults. Services read only these, all through one registry,
`services/common/config.py` (name, default, type, meaning, reader of each); this page is generated from
it (`{COMMAND}`), and tests/test_config_documented.py fails when the two differ.
Switches take 1/0, true/false, yes/no or on/off; an empty number or switch means the default; a value
that does not parse stops the service with an error naming the variable. Lists are comma-separated
numbers. Text settings are taken as written (an empty `LIKENESS_VOICE_CACHE_DIR` means no disk cache).
A setting read inside a function follows the environment at that moment; one read at import time is
fixed for the process.

Besides these, `OTEL_EXPORTER_OTLP_ENDPOINT` (unset by default) sends traces by OTLP/gRPC, as an
alternative to `LIKENESS_TRACE_FILE`.

How the settings work together, in more words: [security.md](security.md) (API keys, TLS, webhooks,
the internal token, binding), [operations.md](operations.md) (jobs, replicas, retention, Triton,
storage), [live.md](live.md) (the live leads and windows) and [../deploy/README.md](../deploy/README.md)
(the values the Kubernetes manifests set).

| variable | default | type | meaning | used by |
|---|---|---|---|---|
"""


def default_text(setting: Setting) -> str:
    """The default as the table writes it: a text default exactly as it is, else the registry's own
    wording where it has one ("unset", "20 MiB", "0.5 s"), else the value."""
    if setting.kind == "str" and setting.default:
        return f"`{setting.default}`"
    if setting.documented is not None:
        return setting.documented
    if isinstance(setting.default, bool):
        return "1" if setting.default else "0"
    if isinstance(setting.default, float) and setting.default.is_integer():
        return str(int(setting.default))
    if isinstance(setting.default, tuple):
        return ",".join(str(v) for v in setting.default)
    return str(setting.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    rows = [f"| `{s.name}` | {_cell(default_text(s))} | {s.kind} | {_cell(s.meaning)} | {_cell(s.used_by)} |"
            for s in SETTINGS.values()]
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(SETTINGS)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
