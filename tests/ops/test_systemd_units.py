"""The systemd units in deploy/systemd/ as a hospital installs them: valid for systemd, and saying what we promise.

``systemd-analyze verify`` reads each unit the way systemd would (a misspelt directive, a bad value, a missing
dependency or an ExecStart that cannot run are all reported). It checks that ExecStart's program exists, so the
units are copied into a temporary folder with ExecStart pointed at this environment's ``insite``; nothing else is
changed. The template is verified as an instance, ``insite-run@study1.service``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from insite.cli import app

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
COORDINATOR, RUN, SITE = "insite-coordinator.service", "insite-run@.service", "insite-site.service"
SHIPPED_INSITE = "/opt/insite/venv/bin/insite"
THIS_INSITE = Path(sys.executable).parent / "insite"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or shutil.which("systemd-analyze", path="/usr/bin:/bin")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed ('make system-deps' as root installs systemd)"
)


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: section -> directive -> every value it was given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    text = path.read_text().replace("\\\n", " ")  # a trailing backslash continues the line
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"{path.name}: not a directive: {line!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        section.setdefault(key, []).append(value)
    return sections


def service(name: str) -> dict[str, list[str]]:
    return read_unit(UNITS / name)["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, got {values}"
    return values[0]


def copy_for_verify(folder: Path) -> None:
    """The three units in ``folder``, with ExecStart running this environment's ``insite``."""
    assert THIS_INSITE.exists(), f"{THIS_INSITE}: insite is not installed in this environment"
    for name in (COORDINATOR, RUN, SITE):
        text = (UNITS / name).read_text()
        shipped = f"ExecStart={SHIPPED_INSITE} "
        assert text.count(shipped) == 1, f"{name}: ExecStart does not run {SHIPPED_INSITE}"
        (folder / name).write_text(text.replace(shipped, f"ExecStart={THIS_INSITE} "))


def verify(folder: Path) -> str:
    """What ``systemd-analyze verify`` reports on the three units in ``folder`` ('' when nothing)."""
    units = [folder / COORDINATOR, folder / SITE, folder / "insite-run@study1.service"]
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--recursive-errors=yes", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    return (done.stdout + done.stderr + (f"\n(exit code {done.returncode})" if done.returncode else "")).strip()


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_nothing(tmp_path):
    copy_for_verify(tmp_path)
    assert verify(tmp_path) == ""


@needs_systemd_analyze
def test_verify_would_report_a_misspelt_directive(tmp_path):
    """The check above is not vacuous: one misspelt directive in the template is reported, naming it."""
    copy_for_verify(tmp_path)
    template = tmp_path / RUN
    template.write_text(template.read_text().replace("\nProtectHome=", "\nProtectHomes=", 1))
    assert "ProtectHomes" in verify(tmp_path)


@pytest.mark.parametrize("name", [COORDINATOR, RUN, SITE])
def test_each_unit_restarts_on_failure_as_the_insite_user_with_the_system_read_only(name):
    settings = service(name)
    assert one(settings, "User") == one(settings, "Group") == "insite"
    assert one(settings, "Restart") == "on-failure"
    assert "2" in one(settings, "RestartPreventExitStatus").split()  # could not do its work: a restart won't help
    assert one(settings, "NoNewPrivileges") == "yes"
    assert one(settings, "ProtectSystem") == "strict"
    assert one(settings, "ProtectHome") == "yes"
    assert one(settings, "CapabilityBoundingSet") == ""
    assert one(settings, "UMask") == "0077"
    assert one(settings, "StateDirectory").startswith("insite/")  # /var/lib/insite/...: its only writable folder
    assert "ReadWritePaths" not in settings
    assert read_unit(UNITS / name)["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_run_is_not_restarted_when_finished_unrunnable_or_paused():
    assert {"2", "3"} <= set(one(service(RUN), "RestartPreventExitStatus").split())


def test_the_run_needs_the_coordinator_and_every_unit_waits_for_network_and_clock():
    run = read_unit(UNITS / RUN)["Unit"]
    assert run["Requires"] == [COORDINATOR]
    for name in (COORDINATOR, RUN, SITE):
        after = " ".join(read_unit(UNITS / name)["Unit"]["After"]).split()
        assert {"network-online.target", "time-sync.target"} <= set(after), name
    assert COORDINATOR in " ".join(run["After"]).split()


def test_only_the_site_may_use_devices():
    """The coordinator's units see no hardware; the site's may need its GPU."""
    assert one(service(COORDINATOR), "PrivateDevices") == one(service(RUN), "PrivateDevices") == "yes"
    assert "PrivateDevices" not in service(SITE)


def insite_invocations(command: str) -> list[list[str]]:
    """The argument lists of every ``insite`` this Exec line runs, a ``sh -c '...'`` included."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    found = []
    for at, word in enumerate(words):
        if word == SHIPPED_INSITE:
            args = []
            for arg in words[at + 1 :]:
                if set(arg) <= set(";|&<>()"):
                    break
                args.append(arg)
            found.append(args)
        elif SHIPPED_INSITE in word:
            found += insite_invocations(word)
    return found


@pytest.mark.parametrize("name", [COORDINATOR, RUN, SITE])
def test_the_units_call_insite_commands_and_options_that_exist(name):
    settings = service(name)
    lines = [value for key in ("ExecStart", "ExecStartPost") for value in settings.get(key, [])]
    invocations = [args for line in lines for args in insite_invocations(line)]
    assert invocations, f"{name} runs no insite command"
    for args in invocations:
        words = [arg for arg in args if not arg.startswith("-")]
        command = typer.main.get_command(app)
        for word in words:
            if not hasattr(command, "commands"):
                break
            assert word in command.commands, f"{name}: 'insite {' '.join(args)}': no command {word!r}"
            command = command.commands[word]
        known = {opt for param in command.params for opt in param.opts}
        unknown = [arg for arg in args if arg.startswith("--") and arg not in known]
        assert not unknown, f"{name}: 'insite {' '.join(args)}': unknown option(s) {unknown}"
