"""Numbers from a load run: percentiles, one round's summary, the side-by-side comparison, the tables.

Pure: records in, plain dicts out (what the result JSON holds), so every figure in
bench/RESULTS-load.md can be recomputed from the JSON.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

SCHEMA = 1
# the phases of one attendee, in the order a browser goes through them
PHASES = ("login", "form", "spawn", "lab", "kernel_start", "cell", "stop")
# derived spans, from the attendee's arrival
SPANS = ("ready", "total")


@dataclass
class AttendeeRecord:
    """One attendee of one round. Times in seconds; ``ready_at``/``done_at`` from the round's start."""

    user: str
    arrival: float
    durations: dict = field(default_factory=dict)   # phase -> seconds
    ready_at: float | None = None                   # lab loaded and /user/NAME/api/status answered
    done_at: float | None = None                    # the cell's output checked
    failed_phase: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed_phase is None

    def fail(self, phase: str, reason: str):
        if self.failed_phase is None:  # the first failure is the one that counts
            self.failed_phase, self.reason = phase, reason[:500]


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default method)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(values) -> dict:
    """n, p50, p95, max (seconds, 3 decimals); None figures when there are no values."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": len(values), "p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3),
            "max": round(max(values), 3)}


def ready_curve(records) -> list[list[float]]:
    """[[seconds since the round's start, attendees ready so far], ...]: the plot's steps."""
    times = sorted(r.ready_at for r in records if r.ready_at is not None)
    return [[round(t, 3), i + 1] for i, t in enumerate(times)]


def round_summary(records, *, target: str, round_no: int, users: int, window: float, hub=None, proxy=None,
                  idle_memory_mib=None, latency=None, loadavg=None, prewarm=None) -> dict:
    """One round of one target, as stored in the result JSON. ``prewarm``: the admin's pre-warm job
    before the round (its seconds and counts), or None for a cold round."""
    records = list(records)
    phases = {p: summarize([r.durations.get(p) for r in records if r.ok or p in r.durations]) for p in PHASES}
    spans = {
        "ready": summarize([r.ready_at - r.arrival for r in records if r.ready_at is not None]),
        "total": summarize([r.done_at - r.arrival for r in records if r.done_at is not None]),
    }
    ready = [r.ready_at for r in records if r.ready_at is not None]
    all_ready = max(ready) if len(ready) == users else None
    done = [r.done_at for r in records if r.done_at is not None]
    return {
        "target": target,
        "round": round_no,
        "users": users,
        "window": window,
        "all_ready": round(all_ready, 3) if all_ready is not None else None,
        "all_done": round(max(done), 3) if len(done) == users else None,
        "ready_count": len(ready),
        "failed": sum(1 for r in records if not r.ok),
        "failures": [{"user": r.user, "phase": r.failed_phase, "reason": r.reason} for r in records if not r.ok],
        "phases": phases,
        "spans": spans,
        "ready_curve": ready_curve(records),
        "hub": hub,
        "proxy": proxy,
        "idle_memory_mib": summarize(idle_memory_mib or []),
        "latency": latency or {},
        "loadavg": loadavg,
        "prewarm": prewarm,
        "attendees": [asdict(r) for r in records],
    }


# (label, how to read the figure off a round summary); lower is better for all of them
def _cold(read):
    """A cold-start figure: none for a pre-warmed round (its servers were started before it began)."""
    return lambda r: None if r.get("prewarm") else read(r)


def _warm(read):
    """A pre-warmed round's figure: none for a cold round."""
    return lambda r: read(r) if r.get("prewarm") else None


METRICS = (
    ("all N ready (s)", _cold(lambda r: r["all_ready"])),
    ("all N ran the cell (s)", lambda r: r["all_done"]),
    ("arrival → ready p50 (s)", _cold(lambda r: r["spans"]["ready"]["p50"])),
    ("arrival → ready p95 (s)", _cold(lambda r: r["spans"]["ready"]["p95"])),
    ("pre-warm of N by the admin (s)", _warm(lambda r: r["prewarm"]["seconds"])),
    ("after pre-warm: login → lab p50 (s)", _warm(lambda r: r["spans"]["ready"]["p50"])),
    ("after pre-warm: login → lab p95 (s)", _warm(lambda r: r["spans"]["ready"]["p95"])),
    ("login p95 (s)", lambda r: r["phases"]["login"]["p95"]),
    ("spawn POST → progress ready p95 (s)", lambda r: r["phases"]["spawn"]["p95"]),
    ("lab + api/status p95 (s)", lambda r: r["phases"]["lab"]["p95"]),
    ("kernel start p95 (s)", lambda r: r["phases"]["kernel_start"]["p95"]),
    ("cell p95 (s)", lambda r: r["phases"]["cell"]["p95"]),
    ("stop p95 (s)", lambda r: r["phases"]["stop"]["p95"]),
    ("failed", lambda r: r["failed"]),
    ("hub CPU (s)", lambda r: (r["hub"] or {}).get("cpu_seconds")),
    ("hub RSS peak (MiB)", lambda r: (r["hub"] or {}).get("rss_peak_mib")),
    ("proxy CPU (s)", lambda r: (r["proxy"] or {}).get("cpu_seconds")),
    ("proxy RSS peak (MiB)", lambda r: (r["proxy"] or {}).get("rss_peak_mib")),
    ("idle memory / server p50 (MiB)", lambda r: r["idle_memory_mib"]["p50"]),
    ("proxy /user/NAME/api/status p95 (s)", lambda r: (r["latency"].get("user_status") or {}).get("p95")),
    ("hub API p95 (s)", lambda r: (r["latency"].get("hub_api") or {}).get("p95")),
)


def comparison(runs: list[dict]) -> list[dict]:
    """Per metric: each target's rounds and their median, and stackhub / stock of the medians."""
    rows = []
    for label, read in METRICS:
        row = {"metric": label}
        for target in ("stock", "stackhub"):
            vals = [read(r) for r in runs if r["target"] == target]
            row[target] = vals
            known = [v for v in vals if v is not None]
            # a round where not all became ready has no "all ready" time: the median says so
            row[f"{target}_median"] = (round(statistics.median(known), 3)
                                       if known and len(known) == len(vals) else None)
        a, b = row["stackhub_median"], row["stock_median"]
        row["ratio"] = round(a / b, 2) if a is not None and b else None
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(result: dict) -> str:
    """The side-by-side table of bench/RESULTS-load.md: every round, the medians, the ratio."""
    lines = ["| measure | stock (each round) | stackhub (each round) | stock median | stackhub median | ratio |",
             "|---|---|---|---|---|---|"]
    for row in result["comparison"]:
        each = {t: " / ".join(_fmt(v) for v in row[t]) or "—" for t in ("stock", "stackhub")}
        lines.append(f"| {row['metric']} | {each['stock']} | {each['stackhub']} | {_fmt(row['stock_median'])} | "
                     f"{_fmt(row['stackhub_median'])} | {_fmt(row['ratio'])} |")
    return "\n".join(lines)


def result_document(*, scenario: dict, runs: list[dict], machine: dict, started: str, finished: str,
                    command: str) -> dict:
    """The whole result JSON."""
    return {"schema": SCHEMA, "command": command, "started": started, "finished": finished, "machine": machine,
            "scenario": scenario, "runs": runs, "comparison": comparison(runs)}
