"""Why a user's server stopped, in words the user can act on (pure).

The engine tells how a container ended (``OOMKilled``, the exit code, its memory limit); the
spawner hands that here, with the last lines of its log, and shows the result on the spawn page:
a server killed for memory names its size's limit and the next larger size to pick, any other
death at start shows what the server printed last.
"""

from __future__ import annotations

from spawner.core.config import Size, memory_bytes

LOG_LINES = 10
LOG_CHARS = 2000


def size_of(memory: int, sizes: list[Size]) -> Size | None:
    """The configured size whose memory limit is ``memory`` bytes (None: none is)."""
    return next((s for s in sizes if memory_bytes(s.memory) == memory), None)


def larger_sizes(memory: int, sizes: list[Size]) -> list[Size]:
    return sorted((s for s in sizes if memory_bytes(s.memory) > memory), key=lambda s: memory_bytes(s.memory))


def exit_message(state: dict, memory: int, sizes: list[Size], logs: str = "") -> str:
    """The message for a server container that ended with ``state`` (Docker's ``State``)."""
    if state.get("OOMKilled"):
        size = size_of(memory, sizes)
        limit = f"{size.memory} of size '{size.name}'" if size else f"{memory / 2**20:.0f} MiB"
        bigger = larger_sizes(memory, sizes)
        advice = (f"Start it again with a larger size: {bigger[0].name} ({bigger[0].memory})." if bigger else
                  "No larger size is offered here: keep less data in memory at once (or ask an admin).")
        text = f"Your server ran out of memory: it used all of its memory limit, {limit}, and was stopped. {advice}"
    else:
        text = f"Your server stopped (exit code {state.get('ExitCode')})."
    tail = "\n".join(logs.strip().splitlines()[-LOG_LINES:])[-LOG_CHARS:]
    # said even when empty: a server killed before it wrote a line is a clue too (memory at import time)
    return f"{text} Its last log lines:\n{tail}" if tail else f"{text} Its last log lines: none (it stopped before writing any)."
