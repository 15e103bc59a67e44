"""The import layering, read from the source (every import, function-local ones too):

    cli, devtools                              (entry points and tooling)
    gateway -> pipeline                        (the platform; the request every path shares)
    tts, expression, render                    (the stages: each other only through a package's facade)
    common: infra, live -> script -> domain -> config
    likeness_client (clients/python)           (the client: grpcio, protobuf and the stdlib alone)

Nothing under services/common imports a service; no runtime package imports services.devtools; the
services use of likeness_client only its generated protos and the live markers (LikenessClient is for
the CLI, the tests and product backends).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python" / "likeness_client"
STAGES = ("tts", "expression", "render")
SERVICES = (*STAGES, "gateway", "pipeline")
# common's layers: what each may import of common (besides itself and the generated protos)
# ("root": the modules directly under services/common: config and lazy, which import nothing of common)
COMMON = {"root": set(), "domain": {"root"}, "script": {"root", "domain"},
          "infra": {"root", "domain"}, "live": {"root", "domain", "script", "infra"}}


def imports(prefix: str = "services.") -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every absolute import of `prefix`* in services/
    (`from a.b import c` counts as importing a.b, and a.b.c when that is a module)."""
    found = []
    for path in (ROOT / "services").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found += [(module, target, line) for target, line in imported(path) if target.startswith(prefix)]
    return found


def imported(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                                                     if is_module(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    """common's layer of a module under services.common (a subpackage's name, or "root")."""
    name = part(module, 2)
    return name if name in COMMON else "root"


def part(module: str, depth: int) -> str:
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else ""


def test_common_imports_no_service_and_its_layers_only_downwards() -> None:
    wrong = []
    for source, target, line in imports():
        if part(source, 1) != "common":
            continue
        if part(target, 1) != "common":
            wrong.append(f"{source}:{line} imports {target} (common imports no service)")
            continue
        layer, used = layer_of(source), layer_of(target)
        if layer != used and used not in COMMON.get(layer, set()):
            wrong.append(f"{source}:{line} ({layer}) imports {target} ({used})")
    assert not wrong, "\n".join(wrong)


def test_no_runtime_module_imports_the_dev_tooling() -> None:
    wrong = [f"{s}:{line} imports {t}" for s, t, line in imports()
             if part(t, 1) == "devtools" and part(s, 1) in (*SERVICES, "common")]
    assert not wrong, "\n".join(wrong)


def test_the_stages_are_used_only_through_their_facades() -> None:
    """Outside a stage's package (tts, expression, render), its modules are used only through the
    package's facade (`from services.render import Renderer`), and a stage never imports the platform."""
    wrong = []
    for source, target, line in imports():
        owner, used = part(source, 1), part(target, 1)
        if used == owner or used not in SERVICES or owner == "devtools":
            continue
        if used in ("gateway", "pipeline"):
            if owner in STAGES:
                wrong.append(f"{source}:{line} imports {target} (a stage does not import the platform)")
        elif used in STAGES and target != f"services.{used}":
            wrong.append(f"{source}:{line} imports {target} (use services.{used}'s facade)")
    assert not wrong, "\n".join(wrong)


def test_the_client_package_imports_only_grpc_protobuf_and_the_standard_library() -> None:
    """likeness_client (a wheel of its own) needs nothing of the services, numpy or Prometheus; the
    generated code (likeness_client/proto, not in git) is protoc's and imports only protobuf and grpc."""
    allowed = {"grpc", "google", "likeness_client", *sys.stdlib_module_names}
    files = [path for path in CLIENT.rglob("*.py") if "proto" not in path.relative_to(CLIENT).parts]
    assert {path.name for path in files} >= {"__init__.py", "client.py", "markers.py"}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}" for path in files
             for target, line in imported(path) if target.split(".")[0] not in allowed]
    assert not wrong, "\n".join(wrong)


def test_the_services_use_only_the_client_package_s_protos_and_markers() -> None:
    wrong = [f"{s}:{line} imports {t}" for s, t, line in imports("likeness_client")
             if part(s, 1) not in ("cli", "devtools")
             and not (t.startswith("likeness_client.proto") or t == "likeness_client.markers")]
    assert not wrong, "\n".join(wrong)
    found = {(s, t) for s, t, _ in imports("likeness_client")}
    assert ("services.common.live.pacing", "likeness_client.markers") in found  # (the scan works)


def test_the_layering_test_reads_imports() -> None:
    """(The checks above see function-local imports too: a known one is found.)"""
    found = {(s, t) for s, t, _ in imports()}
    assert ("services.gateway.server", "services.pipeline.request") in found
    assert ("services.pipeline.embedded", "services.render") in found  # (function-local)
    assert ("services.gateway.server", "services.gateway.jobs") in found


def test_the_api_enums_name_the_domain_vocabulary() -> None:
    from services.common.domain import directions
    from services.common.infra import wire

    assert set(wire.EMOTIONS.values()) == set(directions.EMOTIONS)
    assert set(wire.EXPRESSIVENESS.values()) == set(directions.EXPRESSIVENESS)
    assert set(wire.MOTIONS.values()) == set(directions.MOTIONS) == set(directions.SECONDS)
