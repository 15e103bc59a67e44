"""The import layering, read from the source (every import, function-local ones too):

    cli, client, devtools                      (entry points and tooling)
    gateway -> pipeline                        (the platform; the request every path shares)
    tts, expression, render                    (the stages: each other only through a package's facade)
    common: infra, live -> script -> domain -> config

Nothing under services/common imports a service; no runtime package imports services.devtools.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("tts", "expression", "render")
SERVICES = (*STAGES, "gateway", "pipeline")
# common's layers: what each may import of common (besides itself and the generated protos)
# ("root": the modules directly under services/common: config and lazy, which import nothing of common)
COMMON = {"root": set(), "domain": {"root"}, "script": {"root", "domain"},
          "infra": {"root", "domain"}, "live": {"root", "domain", "script", "infra"}}


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every absolute import of services.* in services/
    (`from a.b import c` counts as importing a.b, and a.b.c when that is a module)."""
    found = []
    for path in (ROOT / "services").rglob("*.py"):
        if "proto_gen" in path.parts:
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                           if is_module(f"{node.module}.{a.name}")]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found += [(module, t, node.lineno) for t in targets if t.startswith("services.")]
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    """common's layer of a module under services.common (a subpackage's name, or "root")."""
    name = part(module, 2)
    return name if name in COMMON or name == "proto_gen" else "root"


def part(module: str, depth: int) -> str:
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else ""


def test_common_imports_no_service_and_its_layers_only_downwards() -> None:
    wrong = []
    for source, target, line in imports():
        if part(source, 1) != "common" or part(target, 1) == "common" and part(target, 2) == "proto_gen":
            continue
        if part(target, 1) != "common":
            wrong.append(f"{source}:{line} imports {target} (common imports no service)")
            continue
        layer, used = layer_of(source), layer_of(target)
        if layer != used and used not in COMMON.get(layer, set()) and layer != "proto_gen":
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
