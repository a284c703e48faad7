"""Ready-over-time as a PNG: attendees ready (lab loaded) against seconds since the round started."""

from __future__ import annotations

from pathlib import Path

COLORS = {"stackhub": "tab:blue", "stock": "tab:gray"}
STYLES = ("-", "--", ":", "-.")


def plot_ready(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for run in result["runs"]:
        curve = run["ready_curve"]
        xs = [0.0] + [p[0] for p in curve]
        ys = [0] + [p[1] for p in curve]
        label = (f"{run['target']} round {run['round']}: all {run['users']} ready in {run['all_ready']:.1f} s"
                 if run["all_ready"] is not None else
                 f"{run['target']} round {run['round']}: {run['ready_count']}/{run['users']} ready, "
                 f"{run['failed']} failed")
        ax.step(xs, ys, where="post", color=COLORS.get(run["target"], "black"),
                linestyle=STYLES[(run["round"] - 1) % len(STYLES)], label=label)
    sc = result["scenario"]
    arrival = "all at once" if not sc["window"] else f"arriving over {sc['window']:g} s"
    ax.set_title(f"{sc['users']} attendees, {arrival}: ready over time ({result['started'][:16]} UTC)")
    ax.set_xlabel("seconds since the first arrival")
    ax.set_ylabel("attendees with JupyterLab loaded")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
