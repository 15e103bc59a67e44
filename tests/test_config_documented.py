"""services/common/config.py is the one place settings live: docs/configuration.md (the one place an
operator looks) is generated from its registry by scripts/gen_config_doc.py and must be exactly what the
generator writes now (regenerate: .venv/bin/python scripts/gen_config_doc.py); the code reads LIKENESS_*
variables only through it (except the client package, which cannot import it: it reads its own two,
with the registry's defaults); and its parser accepts what it says and names the variable when a value
is wrong."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from services.common import config
from services.common.config import SETTINGS, ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\b(LIKENESS_[A-Z0-9_]*[A-Z0-9])\b")
CONFIG_PY = ROOT / "services" / "common" / "config.py"
CLIENT = ROOT / "clients" / "python" / "likeness_client"
# likeness_client needs grpcio and protobuf alone (no services.common.config): it reads these itself
CLIENT_READS = {"LIKENESS_API_KEY", "LIKENESS_TLS_CA_FILE"}
CONFIG_MD = ROOT / "docs" / "configuration.md"
GENERATOR = ROOT / "scripts" / "gen_config_doc.py"


def code_files() -> list[Path]:
    """The services, the Triton models and the client package (less its generated code)."""
    client = [path for path in CLIENT.rglob("*.py") if "proto" not in path.relative_to(CLIENT).parts]
    return [*(ROOT / "services").rglob("*.py"), *(ROOT / "model_repository").rglob("*.py"), *client]


def _generator():
    """scripts/gen_config_doc.py, loaded by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_config_doc", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_what_the_generator_writes_from_the_registry() -> None:
    gen = _generator()
    assert CONFIG_MD.read_text() == gen.render(), (
        "docs/configuration.md is not what scripts/gen_config_doc.py makes of services/common/config.py "
        f"now: regenerate it with `{gen.COMMAND}` (and commit the result)")


def test_configuration_md_has_one_row_per_setting_with_its_default() -> None:
    gen = _generator()
    rows = [line for line in CONFIG_MD.read_text().splitlines() if line.startswith("| `LIKENESS_")]
    assert [NAME.search(row).group(1) for row in rows] == list(SETTINGS)
    for row, setting in zip(rows, SETTINGS.values()):
        assert row.split(" | ")[1] == gen.default_text(setting).replace("|", "\\|"), row
    # the generator's defaults are the registry's: a text default verbatim, numbers as numbers
    assert gen.default_text(SETTINGS["LIKENESS_TTS_ADDR"]) == "`127.0.0.1:50052`"
    assert gen.default_text(SETTINGS["LIKENESS_MAX_PHOTO_YAW_DEG"]) == "40"
    assert gen.default_text(SETTINGS["LIKENESS_BREATHING"]) == "1"


def test_the_docs_name_only_registered_settings() -> None:
    """A LIKENESS_* name in README.md or docs/ that neither the registry nor a tool outside the services
    (benchmarks/, scripts/, deploy/: e.g. LIKENESS_BENCH_METHODS) knows is a stale document."""
    tools = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").iterdir(), *(ROOT / "deploy").rglob("*.sh")]
    known = set(SETTINGS).union(*(NAME.findall(path.read_text()) for path in tools if path.is_file() and path != GENERATOR))
    stale = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        names = set(NAME.findall(path.read_text())) - known
        if names:
            stale[str(path.relative_to(ROOT))] = sorted(names)
    assert not stale, f"documented but not registered in services/common/config.py: {stale}"


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


def _environ_reads(tree: ast.AST, allowed: set[str] = frozenset()) -> list[tuple[int, str]]:
    """os.environ.get(X) / os.getenv(X) / os.environ[X] (read) where X is a LIKENESS_* literal (not in
    `allowed`) or not a literal at all (a helper that reads a name it was given)."""
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
        if literal is None or literal.startswith("LIKENESS_") and literal not in allowed:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_config_py_reads_likeness_variables_from_the_environment() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: {code}"
                 for path in code_files() if path != CONFIG_PY
                 for line, code in _environ_reads(ast.parse(path.read_text()),
                                                  CLIENT_READS if path.is_relative_to(CLIENT) else set())]
    assert not offenders, "read these through services.common.config:\n" + "\n".join(offenders)
    # the scan does find such reads: config.py itself has one
    assert _environ_reads(ast.parse(CONFIG_PY.read_text()))


def test_the_client_reads_its_variables_with_the_registered_defaults() -> None:
    """The client package's own reads (os.environ.get(NAME, default)) agree with the registry."""
    reads = {}
    for path in CLIENT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.get" \
                    and ast.unparse(node.args[0]).strip("'\"") in CLIENT_READS:
                reads[node.args[0].value] = node.args[1].value if len(node.args) > 1 else None
    assert reads == {name: SETTINGS[name].default for name in CLIENT_READS}
    # (tests/test_client_package.py: an installed client sends $LIKENESS_API_KEY on a real call)


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
    from services.common.domain.speech import max_script_chars
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
    from services.common.infra.grpc_server import grpc_port
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
