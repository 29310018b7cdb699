"""docker-compose.yml and .env.example, read as compose reads them: every secret required and
none published, every variable documented, ports on 127.0.0.1, the proxy image pinned, Flower's
password never on a command line, and an override that runs beside an existing proxy."""

from __future__ import annotations

import re
from pathlib import Path

from worker.preflight.config import PUBLISHED
from worker.preflight.env_file import GENERATED
from worker.preflight.proxy import TESTED_VERSION

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
EXISTING_PROXY = ROOT / "deploy" / "compose.existing-proxy.yml"
SECRETS = ("LITELLM_MASTER_KEY", "KEY_ENCRYPTION_KEY", "EVENT_SIGNING_SECRET", "API_TOKENS", "POSTGRES_PASSWORD",
           "FLOWER_PASSWORD")


def uncommented(path: Path) -> str:
    return "\n".join(line.split(" #")[0] for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def references(path: Path) -> list[tuple[str, str]]:
    """(name, what follows the name) of each ${...} compose interpolates."""
    return re.findall(r"\$\{([A-Z0-9_]+)([^}]*)\}", uncommented(path))


def example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.M))


def test_env_example_carries_every_variable_compose_reads_and_no_secret_value():
    read = {name for path in (COMPOSE, EXISTING_PROXY) for name, _ in references(path)}
    assert read - set(example()) == set()
    assert {name: example()[name] for name in SECRETS if example()[name]} == {}
    assert set(GENERATED) <= set(SECRETS)  # what ./scripts/run fills in


def test_every_secret_is_required_and_none_has_a_default():
    for path in (COMPOSE, EXISTING_PROXY):
        for name, rest in references(path):
            if name in SECRETS:
                assert rest.startswith(":?"), (path.name, name, rest)
    text = COMPOSE.read_text()
    for values in PUBLISHED.values():
        assert not any(value in text for value in values)


def test_published_ports_are_on_localhost_and_flowers_password_is_not_in_a_command():
    text = uncommented(COMPOSE)
    ports = re.findall(r'^\s+- "([^"]+:\d+)"$', text, flags=re.M)
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    assert "basic-auth" not in text and "basic_auth" not in text and "FLOWER_PASSWORD" not in "".join(
        line for line in text.splitlines() if "command:" in line)


def test_the_proxy_image_is_the_tested_version():
    image = re.search(r"image: \$\{LITELLM_IMAGE:-([^}]+)\}", COMPOSE.read_text()).group(1)
    assert image == f"ghcr.io/berriai/litellm:v{TESTED_VERSION}" == example()["LITELLM_IMAGE"]


def test_the_override_leaves_the_bundled_proxy_out_and_points_every_service_at_yours():
    text = uncommented(EXISTING_PROXY)
    assert re.search(r"^  litellm:\n    profiles: \[\"bundled-proxy\"\]", text, flags=re.M)
    assert {"migrate", "worker", "beat", "flower"} <= set(re.findall(r"^  (\w+):\n    environment: \*existing-proxy",
                                                                       text, flags=re.M))
    # The workers' dependency on the bundled proxy must not stop compose when it is left out.
    assert re.search(r"litellm:\n\s+condition: service_healthy\n\s+required: false", COMPOSE.read_text())
