"""Where the hub and its services find the state folder and the secret files.

Inside the hub container by default; ``STACKHUB_HUB_STATE`` and ``STACKHUB_SECRETS`` move them (the
hub passes both to every service it starts, spawner.hub.apply.service_environment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubPaths:
    """Where the hub finds its state and secrets (inside the hub container by default)."""

    state: Path = Path("/srv/stackhub/state")
    secrets: Path = Path("/srv/stackhub/secrets")

    @classmethod
    def from_env(cls) -> "HubPaths":
        return cls(
            state=Path(os.environ.get("STACKHUB_HUB_STATE", cls.state)),
            secrets=Path(os.environ.get("STACKHUB_SECRETS", cls.secrets)),
        )

    def secret(self, name: str) -> str:
        """Read a secret file; a missing one is a start-up error that names it."""
        path = self.secrets / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise SystemExit(f"stackhub: secret file {path} is missing (run `make up`, which creates it)") from None
