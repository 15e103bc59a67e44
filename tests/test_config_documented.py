"""services/common/config.py is the one place settings live: README.md's Configuration table (the one
place an operator looks) matches its registry, default included; the code reads LIKENESS_* variables only
through it; and its parser accepts what it says and names the variable when a value is wrong."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from services.common import config
from services.common.config import SETTINGS, ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\b(LIKENESS_[A-Z0-9_]*[A-Z0-9])\b")
CONFIG_PY = ROOT / "services" / "common" / "config.py"


def code_files() -> list[Path]:
    files = list((ROOT / "services").rglob("*.py")) + list((ROOT / "model_repository").rglob("*.py"))
    return [path for path in files if "proto_gen" not in path.parts]


def table_rows() -> list[tuple[str, str]]:
    """(variables cell, default cell) of each row of README.md's Configuration table."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration"):]
    table = table[:table.index("\n## ", 1)]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and NAME.search(cells[0]):
            rows.append((cells[0], cells[1]))
    return rows


def documented_default(setting: config.Setting) -> str:
    if setting.documented is not None:
        return setting.documented
    if isinstance(setting.default, bool):
        return "1" if setting.default else "0"
    if isinstance(setting.default, float) and setting.default.is_integer():
        return str(int(setting.default))  # README writes 40, not 40.0
    if isinstance(setting.default, tuple):
        return ",".join(str(v) for v in setting.default)
    return str(setting.default)


def test_every_registered_setting_is_documented_with_its_default() -> None:
    rows = table_rows()
    assert len(rows) > 20  # the table parses
    problems = []
    for name, setting in SETTINGS.items():
        cells = [default for names, default in rows if name in NAME.findall(names)]
        if len(cells) != 1:
            problems.append(f"{name}: in {len(cells)} rows of the table (want 1)")
            continue
        want = documented_default(setting)
        if not re.search(rf"(?<![\w.]){re.escape(want)}(?![\w.])", cells[0]):
            problems.append(f"{name}: default {want!r} not in the row's default cell {cells[0]!r}")
    assert not problems, "README.md's Configuration table vs services/common/config.py:\n" + "\n".join(problems)


def test_the_table_documents_only_registered_settings() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration"):]
    table = table[:table.index("\n## ", 1)]
    stale = sorted(set(NAME.findall(table)) - set(SETTINGS))
    assert not stale, f"README.md documents settings services/common/config.py does not register: {stale}"


def test_every_name_the_code_mentions_is_registered_and_every_setting_is_used() -> None:
    mentioned: set[str] = set()
    used: set[str] = set()
    for path in code_files():
        text = path.read_text()
        mentioned |= set(NAME.findall(text))
        if path != CONFIG_PY:
            used |= set(NAME.findall(text))
    assert len(mentioned) > 20  # the scan works
    assert not sorted(mentioned - set(SETTINGS)), f"register these in config.py: {sorted(mentioned - set(SETTINGS))}"
    assert not sorted(set(SETTINGS) - used), f"registered but read nowhere: {sorted(set(SETTINGS) - used)}"


def _environ_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """os.environ.get(X) / os.getenv(X) / os.environ[X] (read) where X is a LIKENESS_* literal or not a
    literal at all (a helper that reads a name it was given)."""
    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and ast.unparse(node.value) in ("os.environ", "environ"):
            key = node.slice
        if key is None:
            continue
        literal = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
        if literal is None or literal.startswith("LIKENESS_"):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_config_py_reads_likeness_variables_from_the_environment() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: {code}"
                 for path in code_files() if path != CONFIG_PY
                 for line, code in _environ_reads(ast.parse(path.read_text()))]
    assert not offenders, "read these through services.common.config:\n" + "\n".join(offenders)
    # the scan does find such reads: config.py itself has one
    assert _environ_reads(ast.parse(CONFIG_PY.read_text()))


def test_registered_defaults_have_their_declared_type() -> None:
    kinds = {"str": str, "int": int, "float": float, "bool": bool, "list": tuple}
    for setting in SETTINGS.values():
        if setting.default is not None:
            assert type(setting.default) is kinds[setting.kind], setting.name


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), ("TRUE", True), ("Yes", True), (" on ", True),
                                           ("0", False), ("false", False), ("No", False), ("OFF", False)])
def test_boolean_parser_accepts_the_usual_spellings(raw: str, expected: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.parse_bool("LIKENESS_BREATHING", raw) is expected
    monkeypatch.setenv("LIKENESS_BREATHING", raw)
    assert config.get_bool("LIKENESS_BREATHING") is expected


def test_booleans_default_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIKENESS_DIFFUSION_BLINK_TOPUP", raising=False)
    assert config.get_bool("LIKENESS_DIFFUSION_BLINK_TOPUP") is True
    monkeypatch.setenv("LIKENESS_S3_SECURE", "")
    assert config.get_bool("LIKENESS_S3_SECURE") is False


@pytest.mark.parametrize("name, raw", [("LIKENESS_BREATHING", "maybe"), ("LIKENESS_DIFFUSION_BLINK_TOPUP", "2"),
                                       ("LIKENESS_MAX_SCRIPT_CHARS", "5k"), ("LIKENESS_TTS_SENTENCE_SILENCE", "short"),
                                       ("LIKENESS_CLONE_STRENGTHS", "0.5,strong")])
def test_an_invalid_value_fails_naming_the_variable(name: str, raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, raw)
    read = {"bool": config.get_bool, "int": config.get_int, "float": config.get_float,
            "list": config.get_floats}[SETTINGS[name].kind]
    with pytest.raises(ConfigError, match=rf"^{name}='{re.escape(raw)}': expected"):
        read(name)


def test_values_are_read_at_call_time_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.common.speech import max_script_chars
    from services.render.body import breathing_enabled
    from services.tts.cloning.cloner import _strengths, configured_method

    monkeypatch.delenv("LIKENESS_MAX_SCRIPT_CHARS", raising=False)
    assert max_script_chars() == 5000
    monkeypatch.setenv("LIKENESS_MAX_SCRIPT_CHARS", "12")
    assert max_script_chars() == 12
    monkeypatch.setenv("LIKENESS_BREATHING", "off")
    assert breathing_enabled() is False
    monkeypatch.setenv("LIKENESS_CLONE_STRENGTHS", "0.25, 2")
    assert _strengths() == (0.25, 2.0)
    monkeypatch.setenv("LIKENESS_CLONE_METHOD", "Kokoro ")
    assert configured_method() == "kokoro"
    monkeypatch.setenv("LIKENESS_CLONE_METHOD", "no-such-method")
    assert configured_method() == "world"  # the documented fallback for unknown methods


def test_a_setting_without_a_default_needs_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.common.grpc_server import grpc_port
    from services.tts.kokoro import _threads

    monkeypatch.delenv("LIKENESS_GRPC_PORT", raising=False)
    assert grpc_port(50052) == 50052
    with pytest.raises(ConfigError, match="LIKENESS_GRPC_PORT"):
        config.get_int("LIKENESS_GRPC_PORT")
    monkeypatch.delenv("LIKENESS_KOKORO_THREADS", raising=False)
    monkeypatch.setenv("LIKENESS_TTS_THREADS", "3")
    assert _threads() == 3  # Kokoro follows the piper voice's setting unless given its own
    monkeypatch.setenv("LIKENESS_KOKORO_THREADS", "1")
    assert _threads() == 1


def test_override_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIKENESS_ALIGN_MIN_SCORE", raising=False)
    with config.override("LIKENESS_ALIGN_MIN_SCORE", "-70"):
        assert config.get_float("LIKENESS_ALIGN_MIN_SCORE") == -70.0
    assert config.get_float("LIKENESS_ALIGN_MIN_SCORE") == -32.0
