"""What a load run does, checked before anything starts; and in which order the targets take turns.

Pure: no I/O. The CLI builds a ``Scenario`` from its flags (or a YAML/JSON file) and refuses bad
values with a message naming what is allowed, before any container exists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TARGETS = ("stackhub", "stock")
SHORT = {"stackhub": "sh", "stock": "sk"}  # in usernames: which deployment an attendee belongs to
MAX_USERS = 200  # a bound, so a typo cannot start a thousand servers on a shared engine


class Scenario(BaseModel):
    """One load run: N attendees per round, arriving at once or spread over a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(10, ge=1, le=MAX_USERS, description="Attendees per round (N).")
    window: float = Field(0.0, ge=0, le=3600,
                          description="Seconds over which the N arrive, evenly spaced; 0 = all at once.")
    rounds: int = Field(1, ge=1, le=10, description="Rounds per target; targets alternate ABBA across rounds.")
    targets: tuple[Literal["stackhub", "stock"], ...] = Field(TARGETS, min_length=1,
                                                              description="Deployments to measure, interleaved.")
    tag: str = Field("w_2026_43", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stack tag posted by the spawn form.")
    code: str = Field("import lsst.daf.butler; print(2+2)", min_length=1, description="The cell the kernel runs.")
    expect: str = Field("4", description="Text the cell's stdout must contain.")
    idle: float = Field(10.0, ge=0, le=600,
                        description="Seconds everyone stays idle (kernel running) before idle memory is read.")
    keep_kernel: bool = Field(True, description=(
        "Keep each kernel running while idle (idle memory then includes it); false shuts it down after "
        "the cell, as an attendee closing the notebook would: for a large N on a host whose memory "
        "cannot hold N kernels with the stack imported."))
    kernel: bool = Field(True, description=(
        "Each attendee starts a kernel and runs the cell after the lab opens; false stops at the lab, to "
        "measure the hub's path (login, spawn or pre-warmed server, lab) without the kernels' CPU "
        "of earlier arrivals."))
    timeout: float = Field(600.0, ge=10, le=3600, description="Seconds one attendee may take, arrival to cell output.")
    probe_interval: float = Field(0.25, gt=0, le=10,
                                  description="Seconds between proxy / hub API latency probes during the round.")
    prewarm: bool = Field(False, description=(
        "Before each round an admin pre-warms the N attendees' servers (a hub group, started through the "
        "sessions service as `stackhub prewarm` does); the attendees then log in and walk straight to their "
        "lab. Its figures are a row of their own (login → lab), never mixed with cold rounds."))
    shared_origin: bool = Field(False, description=(
        "stackhub with hub.subdomains false (every server on the hub's origin, the fallback) instead of "
        "the default one origin per server: run both, interleaved, for the origins row."))
    prewarm_concurrency: int | None = Field(None, ge=1, le=16, description=(
        "Servers the pre-warm starts at a time (default: the sessions service's)."))

    @field_validator("targets")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"each target at most once; allowed: {', '.join(TARGETS)}")
        return v

    @model_validator(mode="after")
    def _prewarm_is_stackhubs(self):
        if self.prewarm and self.targets != ("stackhub",):
            raise ValueError("prewarm: only stackhub has an admin pre-warm (stock JupyterHub has none); "
                             "use --targets stackhub")
        if self.prewarm_concurrency is not None and not self.prewarm:
            raise ValueError("prewarm_concurrency: only with prewarm")
        return self

    def arrivals(self) -> list[float]:
        """Seconds after the round's start at which each attendee arrives (evenly spread, first at 0)."""
        if self.users == 1 or self.window == 0:
            return [0.0] * self.users
        step = self.window / (self.users - 1)
        return [round(i * step, 6) for i in range(self.users)]


def schedule(targets: tuple[str, ...], rounds: int) -> list[tuple[int, str]]:
    """(round, target) in run order: ABBA... so neither target always goes first (warm caches,
    page cache, a neighbour's load drifting over the session hit both alike)."""
    order = []
    for r in range(rounds):
        turn = list(targets) if r % 2 == 0 else list(reversed(targets))
        order += [(r + 1, t) for t in turn]
    return order


def username(run_id: str, round_no: int, target: str, index: int) -> str:
    """A fresh, valid name per attendee per round (names are claimed once under the tutorial login)."""
    return f"b{run_id}{SHORT[target]}{round_no}u{index:03d}"
