"""Builds likeness-client (metadata: pyproject.toml). The API's Python code, likeness_client/proto/, is
generated here, by the repository's one generator (services/devtools/protogen.py, loaded by its path:
it needs only grpc_tools and the standard library) from the repository's protos/, whenever the package
is built from a checkout: `pip install ./clients/python`, `pip wheel`, an sdist (which then carries the
generated code, so a wheel built from the sdist needs no protos), an editable install.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROTOS = REPO / "protos"
GENERATOR = REPO / "services" / "devtools" / "protogen.py"
PROTO_DIR = HERE / "likeness_client" / "proto"
PROTO_PACKAGE = "likeness_client.proto"


def _protogen():
    """services/devtools/protogen.py as a module, or None outside a repository checkout (an sdist)."""
    if not (PROTOS.is_dir() and GENERATOR.is_file()):
        return None
    spec = importlib.util.spec_from_file_location("_likeness_protogen", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate() -> None:
    protogen = _protogen()
    if protogen is not None:
        protogen.generate(PROTOS, PROTO_DIR, PROTO_PACKAGE)  # (a no-op when the code is current)
    elif not (PROTO_DIR / "__init__.py").is_file():
        raise SystemExit(f"likeness-client: no generated code in {PROTO_DIR} and no {PROTOS} to make it from: "
                         "build the package from a checkout of the repository (or from its sdist)")


def packages() -> list[str]:
    """likeness_client and the generated packages: one per directory of .proto files (likeness/v1 ->
    likeness_client.proto.likeness.v1) and their parents; in an sdist, the generated directories."""
    protogen = _protogen()
    if protogen is not None:
        dirs = {parent for rel in protogen.proto_files(PROTOS) for parent in rel.parents}
    else:
        dirs = {init.parent.relative_to(PROTO_DIR) for init in PROTO_DIR.rglob("__init__.py")}
    generated = {".".join((PROTO_PACKAGE, *d.parts)) for d in dirs}
    return ["likeness_client", *sorted(generated)]


class BuildPy(build_py):
    """Generates likeness_client/proto/ before the package's files are collected."""

    def run(self) -> None:
        generate()
        super().run()


class EggInfo(egg_info):
    """The metadata step (the first of every build: wheel, sdist, editable) lists the packages' files,
    so the generated packages must exist by then on a fresh checkout too (and an sdist carries them)."""

    def run(self) -> None:
        generate()
        super().run()


setup(packages=packages(), cmdclass={"build_py": BuildPy, "egg_info": EggInfo})
