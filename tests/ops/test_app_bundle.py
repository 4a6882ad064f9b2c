"""The app bundle (FAB) Flower ships to every site holds exactly the code its two apps import.

A site administrator approves the FAB by its digest, so it must hold nothing the run does not
execute. The staging code finds the apps' imports by walking their syntax trees; this test checks
its result two independent ways: the standard library's ``modulefinder`` on the project tree, and
importing every module of the built FAB from the FAB alone.
"""

from __future__ import annotations

import io
import modulefinder
import subprocess
import sys
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from deploy.coordinator.app_bundle import APP_ROOMS, COMPONENTS, PROJECT_ROOT, stage_app

PROJECT_ROOMS = ("common", "client", "server", "siteprep", "publication", "deploy", "insite", "configs")


def imported_project_modules() -> set[str]:
    """What the apps import, transitively, by the standard library's own import analysis."""
    finder = modulefinder.ModuleFinder(path=[str(PROJECT_ROOT)])  # third-party imports stay unresolved
    for reference in COMPONENTS.values():
        module = reference.split(":")[0]
        finder.run_script(str(PROJECT_ROOT.joinpath(*module.split(".")).with_suffix(".py")))
    return {name for name in finder.modules if name.split(".")[0] in PROJECT_ROOMS}


def module_of(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def built_fab(tmp_path: Path) -> tuple[Path, set[str]]:
    app = stage_app(tmp_path / "app")
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))) as fab:
        names = [name for name in fab.namelist() if name.endswith(".py")]
        fab.extractall(tmp_path / "fab")
    return tmp_path / "fab", {module_of(name) for name in names}


def test_the_fab_holds_exactly_the_apps_import_closure(tmp_path):
    _, shipped = built_fab(tmp_path)
    expected = imported_project_modules() - {"__main__"}
    assert shipped == expected | {"server.app", "client.app"}
    # the site tools, publication, launchers and CLI never travel
    assert {name.split(".")[0] for name in shipped} == set(APP_ROOMS)
    assert not any(name.startswith(("client.deid", "client.ingest", "server.export")) for name in shipped)


def test_every_fab_module_imports_from_the_fab_alone(tmp_path):
    """A module missing from the FAB would be imported from the site's installed copy, unnoticed."""
    fab, shipped = built_fab(tmp_path)
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(fab)!r})\n"
        f"for name in {sorted(shipped)!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(fab)!r}), (name, module.__file__)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=fab, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
