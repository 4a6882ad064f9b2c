"""The app bundle (FAB) the coordinator ships to every site: exactly the code the two apps import.

A site administrator approves the bundle by its digest (``insite site approve-app``), so it must
hold nothing the run does not execute: not the site tools (de-identification, ingest), not the
publication code, not the launchers. :func:`app_modules` follows the imports of the ServerApp and
ClientApp (including imports inside functions) through the project's own packages, and
:func:`stage_app` copies just those files. ``tests/ops/test_app_bundle.py`` checks the built FAB
against an independent import analysis.
"""

from __future__ import annotations

import ast
import shutil
from importlib import metadata
from pathlib import Path

import tomli_w

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The runtime rooms: the apps may import from these and nothing else of the project.
APP_ROOMS = ("common", "client", "server")
COMPONENTS = {"serverapp": "server.app:app", "clientapp": "client.app:app"}
#: The run-config keys ``flwr run --run-config`` may set (see common.settings.to_run_config).
RUN_CONFIG = {
    "settings": "",  # canonical JSON of common.settings.RunSettings; "" = defaults
    "run-dir": "",  # coordinator-side folder for checkpoints and metrics
    "round-offset": 0,  # rounds already done before this run (resume)
    "initial-weights": "",  # checkpoint to start from (resume); "" = fresh model
    "task": "train",  # what the ServerApp runs: train | evaluate (see common.settings.to_run_config)
}


def app_pyproject() -> dict:
    """The FAB's ``pyproject.toml``: what Flower needs to build, ship and start the two apps."""
    try:
        version = metadata.version("insite")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return {
        "project": {
            "name": "insite-app",
            "version": version,
            "license": "Apache-2.0",
            "description": "insite federated app: the ServerApp, the ClientApp and the code they import",
        },
        "tool": {"flwr": {"app": {"publisher": "insite", "components": COMPONENTS, "config": RUN_CONFIG}}},
    }


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` may import, at any depth of its code (lazy imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}".strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # may be submodules
    return found


def app_modules(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """The project modules the apps import, transitively, with their package ``__init__`` files."""
    todo = [reference.split(":")[0] for reference in COMPONENTS.values()]
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        if module in seen or module.split(".")[0] not in APP_ROOMS:
            continue
        path = _module_file(root, module)
        if path is None:
            continue  # a name imported from a module, not a module
        seen[module] = path
        parts = module.split(".")
        todo.extend(".".join(parts[:n]) for n in range(1, len(parts)))  # parent packages
        todo.extend(_imports(path, module))
    return seen


def stage_app(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """Write the app folder ``flwr run`` builds the FAB from: the apps' modules and their pyproject."""
    if target.exists():
        shutil.rmtree(target)
    for path in app_modules(root).values():
        destination = target / path.relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    (target / "pyproject.toml").write_text(tomli_w.dumps(app_pyproject()))
    (target / "README.md").write_text(
        "insite federated app: the ServerApp and ClientApp and the code "
        "they import (staged by deploy/coordinator/app_bundle.py)\n"
    )
    return target
