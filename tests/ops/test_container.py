"""The container files hold together: every docker-compose.yml service's command (or its image's
CMD) names something the image has (a manage.py command, gunicorn with an importable WSGI app and
config, celery with an importable app and a real subcommand, a console script the image
installs), the Procfile's commands too, and nothing installs packages when a container starts."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery
from django.core.management import get_commands

from config.procfile import procfile_parse

ROOT = Path(__file__).resolve().parents[2]
# Upstream images the compose file may run as they are, with their own entry points.
UPSTREAM_IMAGES = {"postgres", "redis"}
INSTALLERS = re.compile(r"\b(pip3?|uv|poetry|pipenv|apt-get|apk|npm)\b\s+(install|add|sync)\b")


@dataclass
class Stage:
    name: str
    runs: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (keyword, rest), in order


def dockerfile_stages(path: Path) -> list[Stage]:
    """The Dockerfile's stages in order, with their RUN lines and their exec-form CMD and
    ENTRYPOINT (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name))
            continue
        stages[-1].steps.append((keyword, rest))
        if keyword == "RUN":
            stages[-1].runs.append(rest)
        elif keyword in ("CMD", "ENTRYPOINT"):
            value = json.loads(rest)  # exec form only: a shell form would hide signals
            assert isinstance(value, list), f"{keyword} {rest} is not in exec form"
            setattr(stages[-1], keyword.lower(), value)
    return stages


def dependency_names() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        _normalize(re.split(r"[\[=<>~ ]", spec, maxsplit=1)[0])
        for spec in pyproject["project"]["dependencies"]
    }


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_installed(stage: Stage) -> set[str]:
    names = set()
    for run in stage.runs:
        for match in re.finditer(r"pip install ((?:[A-Za-z0-9_.\-\[\]]+==[^\s&;]+\s*)+)", run):
            names |= {_normalize(spec.split("==")[0]) for spec in match.group(1).split()}
    return names


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def command_problems(argv: list[str], stage: Stage, *, is_app: bool) -> list[str]:
    """What in `argv` the image built from `stage` cannot run; [] when all is there."""
    if not argv:
        return ["no command and no CMD"]
    problems = []
    joined = " ".join(argv)
    if INSTALLERS.search(joined):
        problems.append(f"installs packages at start: {joined!r}")
    program = argv[0]
    if is_app and program == "python" and argv[1:2] == ["manage.py"]:
        if len(argv) < 3 or argv[2] not in get_commands():
            problems.append(f"no manage.py command {argv[2:3]}")
        return problems
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    if is_app:
        ep = scripts.get(program)
        if ep is None or ep.dist is None or _normalize(ep.dist.name) not in dependency_names():
            problems.append(f"{program!r} is not a console script of a runtime dependency")
            return problems
    elif _normalize(program) not in _pip_installed(stage):
        problems.append(f"{program!r} is not installed by the {stage.name} stage")
        return problems
    if program == "gunicorn":
        spec = next((a for a in argv[1:] if ":" in a and not a.startswith("-")), None)
        if spec is None:
            problems.append("gunicorn without an app")
        else:
            module, _, attribute = spec.partition(":")
            if not callable(getattr(importlib.import_module(module), attribute, None)):
                problems.append(f"{spec} is not a WSGI callable")
        config = _option(argv, "--config", "-c")
        if config is not None:
            assert config.startswith("python:"), f"gunicorn config {config} is not a module"
            importlib.import_module(config.removeprefix("python:"))
    if program == "celery":
        app_path = _option(argv, "--app", "-A")
        if app_path is None:
            problems.append("celery without --app")
        else:
            module = importlib.import_module(app_path)
            apps = [v for v in vars(module).values() if isinstance(v, Celery)]
            if not apps:
                problems.append(f"{app_path} holds no Celery app")
        subcommands = {"worker", "beat"}
        if not subcommands & set(argv):
            problems.append(f"celery runs none of {sorted(subcommands)}")
    return problems


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _stage_of(service: dict[str, Any], stages: list[Stage]) -> Stage:
    build = service["build"]
    target = build.get("target") if isinstance(build, dict) else None
    return next(s for s in stages if s.name == target) if target else stages[-1]


def test_every_compose_service_runs_something_its_image_has() -> None:
    stages = dockerfile_stages(ROOT / "Dockerfile")
    services = compose_services()
    assert {"postgres", "redis", "migrate", "web", "worker", "beat", "stripe"} <= set(services)

    problems = {}
    for name, service in services.items():
        if "build" not in service:
            image = service["image"].split(":")[0]
            assert image in UPSTREAM_IMAGES, f"{name}: unexpected upstream image {image}"
            command = service.get("command") or []
            if INSTALLERS.search(" ".join(command)):
                problems[name] = [f"installs packages at start: {command}"]
            continue
        stage = _stage_of(service, stages)
        argv = service.get("command") or stage.cmd
        found = command_problems(
            [*stage.entrypoint, *argv], stage, is_app=stage is stages[-1]
        )
        if found:
            problems[name] = found

    assert problems == {}


def test_the_app_image_is_the_default_target_and_web_runs_its_gunicorn() -> None:
    stages = dockerfile_stages(ROOT / "Dockerfile")
    services = compose_services()

    assert stages[-1].name == "app"
    assert stages[-1].cmd[:2] == ["gunicorn", "config.wsgi:application"]
    assert "command" not in services["web"]  # the image's CMD
    assert _stage_of(services["web"], stages) is stages[-1]
    assert _stage_of(services["stripe"], stages).name == "localstripe"
    assert _pip_installed(stages[0]) == {"localstripe"}


def test_the_app_image_compiles_the_bytecode_of_what_it_copies() -> None:
    # PYTHONDONTWRITEBYTECODE: no process of the image writes bytecode, so without this step
    # every process (each run_billing, each worker) would compile the project's modules again
    # (~0.1 s of CPU at each start, docs/performance.md "Start-up").
    app = dockerfile_stages(ROOT / "Dockerfile")[-1]
    copies = [i for i, (keyword, rest) in enumerate(app.steps) if keyword == "COPY"]
    compiles = [
        i
        for i, (keyword, rest) in enumerate(app.steps)
        if keyword == "RUN" and re.search(r"\bpython -m compileall\b.* \.(\s|$)", rest + " ")
    ]
    assert copies and compiles, app.steps
    assert max(compiles) > max(copies)


def test_every_procfile_command_runs_something_the_image_has() -> None:
    app = dockerfile_stages(ROOT / "Dockerfile")[-1]
    problems = {}
    for name, command in procfile_parse(ROOT / "Procfile").items():
        expanded = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command)
        found = command_problems(shlex.split(expanded), app, is_app=True)
        if found:
            problems[name] = found

    assert problems == {}


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["python", "manage.py", "no_such_command"], "no manage.py command"),
        (["sh", "-c", "pip install x==1 && x"], "installs packages at start"),
        (["gunicorn", "config.wsgi:nothing_here"], "is not a WSGI callable"),
        (["celery", "--app", "config", "flower"], "celery runs none of"),
        (["localstripe", "--port", "8420"], "not a console script of a runtime dependency"),
    ],
)
def test_the_check_finds_what_the_image_cannot_run(argv: list[str], problem: str) -> None:
    app = dockerfile_stages(ROOT / "Dockerfile")[-1]

    found = command_problems(argv, app, is_app=True)

    assert any(problem in p for p in found), found
