"""The load tool's own logic (bench/load): scenario checks, ABBA order, percentiles, summaries, the
result JSON and its table. Its walk through a real hub is tests/integration/test_bench_load.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.load.monitor import summarize_resources
from bench.load.scenario import Scenario, schedule, username
from bench.load.stats import (AttendeeRecord, comparison, markdown_table, percentile, result_document,
                              round_summary, summarize)
from bench.load.targets import stock_config_text
from spawner.core.usernames import refusal

REPO = Path(__file__).resolve().parents[2]


# -- scenario ---------------------------------------------------------------------------------------

def test_scenario_defaults_are_both_targets_all_at_once():
    s = Scenario()
    assert s.targets == ("stackhub", "stock")
    assert s.arrivals() == [0.0] * 10


def test_arrivals_spread_evenly_over_the_window():
    assert Scenario(users=5, window=60).arrivals() == [0.0, 15.0, 30.0, 45.0, 60.0]
    assert Scenario(users=1, window=60).arrivals() == [0.0]


@pytest.mark.parametrize("bad", [
    {"users": 0}, {"users": 201}, {"window": -1}, {"rounds": 0}, {"targets": ("stackhub", "jupyter")},
    {"targets": ()}, {"targets": ("stock", "stock")}, {"tag": "w_2026_43; rm -rf /"}, {"surprise": 1},
    {"timeout": 1},
])
def test_bad_scenarios_are_refused(bad):
    with pytest.raises(ValidationError):
        Scenario(**bad)


def test_prewarm_is_a_stackhub_only_scenario():
    s = Scenario(targets=("stackhub",), prewarm=True, prewarm_concurrency=8)
    assert s.prewarm and s.prewarm_concurrency == 8
    with pytest.raises(ValidationError, match="only stackhub has an admin pre-warm"):
        Scenario(prewarm=True)  # both targets: stock JupyterHub has no pre-warm to compare with
    with pytest.raises(ValidationError, match="only with prewarm"):
        Scenario(targets=("stackhub",), prewarm_concurrency=3)
    with pytest.raises(ValidationError):
        Scenario(targets=("stackhub",), prewarm=True, prewarm_concurrency=17)


def test_cli_flags_reach_the_scenario():
    from bench.load.__main__ import parse

    scenario, _ = parse(["--targets", "stackhub", "--users", "3", "--prewarm", "--prewarm-concurrency", "4",
                         "--no-kernel"])
    assert (scenario.prewarm, scenario.prewarm_concurrency, scenario.kernel, scenario.users) == (True, 4, False, 3)
    assert parse([])[0].kernel is True


def test_schedule_alternates_abba():
    assert schedule(("stackhub", "stock"), 3) == [(1, "stackhub"), (1, "stock"), (2, "stock"), (2, "stackhub"),
                                                  (3, "stackhub"), (3, "stock")]
    assert schedule(("stock",), 2) == [(1, "stock"), (2, "stock")]


def test_usernames_are_valid_and_distinct_per_round_and_target():
    names = {username("ab12", r, t, i) for r in (1, 2) for t in ("stackhub", "stock") for i in range(200)}
    assert len(names) == 2 * 2 * 200
    assert all(refusal(n) is None for n in names)


def test_cli_refuses_a_bad_scenario_before_touching_anything():
    done = subprocess.run([sys.executable, "-m", "bench.load", "--users", "0"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "users" in done.stderr and "greater than or equal to 1" in done.stderr


# -- statistics -------------------------------------------------------------------------------------

def test_percentile_interpolates_like_numpy():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile(values, 50) == 5.5
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert percentile([3.0], 95) == 3.0
    assert percentile([10, 1], 50) == 5.5  # order of the input does not matter


def test_percentile_refuses_nonsense():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summarize_skips_missing_values_and_reports_none_for_nothing():
    assert summarize([None, 2.0, 4.0]) == {"n": 2, "p50": 3.0, "p95": 3.9, "max": 4.0}
    assert summarize([]) == {"n": 0, "p50": None, "p95": None, "max": None}


def _record(user, arrival, ready, done, **durations):
    r = AttendeeRecord(user=user, arrival=arrival, durations=dict(durations), ready_at=ready, done_at=done)
    return r


def test_round_summary_counts_failures_and_has_no_all_ready_time_when_one_failed():
    ok = _record("a", 0.0, 5.0, 7.0, login=0.5, spawn=3.0)
    bad = _record("b", 1.0, None, None, login=0.7)
    bad.fail("spawn", "spawn failed: image not found")
    bad.fail("lab", "a later problem is not the reason")
    s = round_summary([ok, bad], target="stock", round_no=1, users=2, window=0)
    assert s["failed"] == 1
    assert s["failures"] == [{"user": "b", "phase": "spawn", "reason": "spawn failed: image not found"}]
    assert s["all_ready"] is None and s["ready_count"] == 1
    assert s["phases"]["login"]["n"] == 2  # the failed attendee did log in
    assert s["phases"]["spawn"]["n"] == 1
    assert s["ready_curve"] == [[5.0, 1]]
    json.dumps(s)  # all plain data


def test_round_summary_all_ready_is_the_last_ready_and_spans_count_from_arrival():
    recs = [_record("a", 0.0, 4.0, 6.0), _record("b", 2.0, 9.0, 12.0)]
    s = round_summary(recs, target="stackhub", round_no=1, users=2, window=2, idle_memory_mib=[80.0, 90.0])
    assert s["all_ready"] == 9.0 and s["all_done"] == 12.0
    assert s["spans"]["ready"]["max"] == 7.0  # b: arrived at 2, ready at 9
    assert s["ready_curve"] == [[4.0, 1], [9.0, 2]]
    assert s["idle_memory_mib"]["p50"] == 85.0


def _run(target, rnd, all_ready, failed=0):
    recs = [_record(f"u{i}", 0.0, all_ready - i, all_ready + 1, login=0.1) for i in range(2)]
    for r in recs[:failed]:
        r.ready_at = None
        r.fail("spawn", "boom")
    return round_summary(recs, target=target, round_no=rnd, users=2, window=0, hub={"cpu_seconds": 10.0})


def test_comparison_takes_medians_per_target_and_their_ratio():
    runs = [_run("stackhub", 1, 6.0), _run("stock", 1, 12.0), _run("stock", 2, 14.0), _run("stackhub", 2, 8.0)]
    row = next(r for r in comparison(runs) if r["metric"] == "all N ready (s)")
    assert row["stock"] == [12.0, 14.0] and row["stackhub"] == [6.0, 8.0]
    assert row["stock_median"] == 13.0 and row["stackhub_median"] == 7.0
    assert row["ratio"] == 0.54


def test_a_round_with_failures_has_no_all_ready_median():
    runs = [_run("stackhub", 1, 6.0, failed=1), _run("stock", 1, 12.0)]
    rows = {r["metric"]: r for r in comparison(runs)}
    assert rows["all N ready (s)"]["stackhub_median"] is None and rows["all N ready (s)"]["ratio"] is None
    assert rows["failed"]["stackhub"] == [1]


def test_prewarmed_rounds_have_their_own_rows_and_no_cold_figures():
    recs = [_record(f"u{i}", 0.0, 0.6 + i / 10, 3.0, login=0.4, lab=0.2 + i / 10) for i in range(3)]
    warm = round_summary(recs, target="stackhub", round_no=1, users=3, window=0,
                         prewarm={"seconds": 9.5, "counts": {"ready": 3}, "concurrency": 3})
    cold = _run("stackhub", 2, 6.0)
    rows = {r["metric"]: r for r in comparison([warm])}
    assert rows["pre-warm of N by the admin (s)"]["stackhub"] == [9.5]
    assert rows["after pre-warm: login → lab p95 (s)"]["stackhub"] == [0.79]
    # a pre-warmed round's readiness is not a cold spawn: those rows stay empty for it
    assert rows["all N ready (s)"]["stackhub"] == [None]
    assert rows["arrival → ready p95 (s)"]["stackhub"] == [None]
    cold_rows = {r["metric"]: r for r in comparison([cold])}
    assert cold_rows["after pre-warm: login → lab p95 (s)"]["stackhub"] == [None]
    assert cold_rows["all N ready (s)"]["stackhub"] == [6.0]


def test_result_document_and_table_round_trip_through_json():
    runs = [_run("stackhub", 1, 6.0), _run("stock", 1, 12.0)]
    doc = result_document(scenario=Scenario(users=2).model_dump(mode="json"), runs=runs, machine={"cpus": 2},
                          started="2026-11-27T12:00:00+00:00", finished="2026-11-27T12:05:00+00:00",
                          command="python -m bench.load --users 2")
    again = json.loads(json.dumps(doc))
    assert again["schema"] == 1 and again["scenario"]["users"] == 2
    table = markdown_table(again)
    assert "| all N ready (s) | 12.0 | 6.00 | 12.0 | 6.00 | 0.50 |" in table
    assert table.count("\n") == len(again["comparison"]) + 1


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.load.plot import plot_ready

    runs = [_run("stackhub", 1, 6.0), _run("stock", 1, 12.0, failed=1)]
    doc = result_document(scenario=Scenario(users=2).model_dump(mode="json"), runs=runs, machine={},
                          started="2026-11-27T12:00:00+00:00", finished="x", command="x")
    path = plot_ready(doc, tmp_path / "load.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resources --------------------------------------------------------------------------------------

def test_resource_summary_cpu_seconds_peak_and_rss():
    mib = 2**20
    samples = [[0.0, 1.0, 100 * mib], [1.0, 1.5, 120 * mib], [2.0, 3.5, 110 * mib], [3.0, 3.6, 105 * mib]]
    s = summarize_resources(samples)
    assert s["cpu_seconds"] == 2.6
    assert s["cpu_pct_mean"] == pytest.approx(86.7, abs=0.1)
    assert s["cpu_pct_peak"] == 125.0  # 2.5 CPU-seconds over the 2 s from t=0 to t=2
    assert s["rss_start_mib"] == 100.0 and s["rss_peak_mib"] == 120.0
    assert summarize_resources(samples[:1]) is None


# -- the stock baseline ----------------------------------------------------------------------------

def test_stock_config_is_plain_jupyterhub_and_dockerspawner():
    text = stock_config_text("stackhub-bench-stock-hub", ["w_2026_43", "v30_0_0"])
    compile(text, "jupyterhub_config.py", "exec")
    assert "import spawner" not in text and "from spawner" not in text and "LSST" not in text  # nothing of stackhub
    assert '"dockerspawner.DockerSpawner"' in text and "FirstUseAuthenticator" in text
    assert "'w_2026_43': 'stackhub/lsst-stack:w_2026_43'" in text
    assert "c.Spawner.start_timeout = 300" in text and "c.Spawner.http_timeout = 120" in text


def test_page_message_reads_the_hubs_error_element():
    from bench.load.attendee import page_message

    page = ('<html><script>var x = "<p class=error>not this</p>";</script><form>...</form>'
            '<p class="spawn-error-msg text-danger">Error: unknown image_tag &#39;w_1999_01&#39;</p></html>')
    assert page_message(page) == "Error: unknown image_tag 'w_1999_01'"
    assert page_message("<h1>500</h1> <p>boom</p>") == "500 boom"
