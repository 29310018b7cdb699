"""A first `.env` for ./scripts/run: .env.example with every secret freshly generated (never a
value this repository publishes), then the list of what only the operator can fill in.

    python -m worker.preflight.env_file .env.example .env

Exit 0 when .env is ready to start with (or already existed), 1 when settings must be filled in
first: the proxy's URL and master key, unless both are already in the environment."""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.fernet import Fernet

GENERATED: dict[str, Callable[[], str]] = {
    "KEY_ENCRYPTION_KEY": lambda: Fernet.generate_key().decode(),
    "EVENT_SIGNING_SECRET": lambda: secrets.token_hex(32),
    # The web app's bearer token for `serve` (comma-separate more to rotate).
    "API_TOKENS": lambda: secrets.token_urlsafe(32),
    # Read by docker-compose.yml only; generated so that compose can start from the same .env.
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "FLOWER_PASSWORD": lambda: secrets.token_urlsafe(24),
}
NEEDED = {
    "LITELLM_BASE_URL": "your LiteLLM proxy's URL",
    "LITELLM_MASTER_KEY": "your proxy's master key (its own LITELLM_MASTER_KEY)",
}


def render(example: str) -> str:
    """The example with each generated setting's line (`NAME=` or `# NAME=...`) given a new value."""
    for name, make in GENERATED.items():
        example, found = re.subn(rf"^#?\s*{name}=.*$", f"{name}={make()}", example, count=1, flags=re.M)
        if not found:
            example += f"{name}={make()}\n"
    return example


def missing(environ: Mapping[str, str]) -> list[str]:
    return [name for name in NEEDED if not environ.get(name, "").strip()]


def create(example: Path, target: Path, environ: Mapping[str, str]) -> int:
    if target.exists():
        return 0
    # Created readable by its owner only: it holds the secrets.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render(example.read_text()))
    print(f"wrote {target} with newly generated {', '.join(GENERATED)}")
    todo = missing(environ)
    if not todo:
        return 0
    print(f"before it can start, set in {target} (or in the environment):")
    for name in todo:
        print(f"  {name}: {NEEDED[name]}")
    print("then run ./scripts/run again (`litellm-credits check` says what is still wrong)")
    return 1


if __name__ == "__main__":
    sys.exit(create(Path(sys.argv[1]), Path(sys.argv[2]), os.environ))
