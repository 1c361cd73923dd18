"""The scheduling benchmark against a given server (CARRIERPAY_DATABASE_URL): its databases are made
there by URL (the migrations read it with SQLAlchemy), named by timing and population, and --keep
leaves them to be queried afterwards."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(url: str, *args: str, subscriptions: int = 30, days: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, CARRIERPAY_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "carrierpay.benchmarks.sched", "--subscriptions", str(subscriptions),
                           "--days", str(days), "--carriers", "2", "--skip-due", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def test_kept_simulations_are_named_by_timing_and_population(pg_cluster):
    admin = pg_cluster.url("postgres")
    done = run_bench(admin, "--timings", "fixed,subscriber", "--habits", "day", "--seed", "3", "--keep")
    assert done.returncode == 0, done.stderr
    assert "subscriber: " in done.stdout and "revenue" in done.stdout
    names = ("bench_sim_fixed_day_3", "bench_sim_subscriber_day_3")
    try:
        for name in names:
            with psycopg.connect(pg_cluster.url(name)) as conn:
                simulated, subscribed = conn.execute(
                    "select (select count(*) from bench.sim), (select count(*) from cp.subscription)").fetchone()
                assert (simulated, subscribed) == (30, 30)
                # an hour of charging went through the simulated carriers
                assert conn.execute("select count(*) from cp.carrier_call where operation = 'charge'").fetchone()[0] > 0
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'drop database if exists "{name}" with (force)')


def test_without_keep_the_simulation_database_is_dropped(pg_cluster):
    admin = pg_cluster.url("postgres")
    done = run_bench(admin, "--timings", "fixed", "--seed", "4")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(admin) as conn:
        assert conn.execute("select count(*) from pg_database where datname like 'bench_sim_%%_4'").fetchone()[0] == 0


@pytest.mark.parametrize("option", [["--keep"], ["--stop-by", "23:59"], ["--stop-after-hours", "1"], ["--resume"]])
def test_keeping_stopping_and_resuming_need_a_server_that_outlives_the_run(option):
    env = {k: v for k, v in os.environ.items() if k != "CARRIERPAY_DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "carrierpay.benchmarks.sched", *option],
                          env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--keep, --stop-after-hours, --stop-by and --resume need CARRIERPAY_DATABASE_URL" in done.stderr


def figures_line(done: subprocess.CompletedProcess, timing: str = "fixed") -> str:
    assert done.returncode == 0, done.stderr
    return next(x for x in done.stdout.splitlines() if x.strip().startswith(timing + " ")).split("; best hours")[0]


def test_a_run_stopped_at_an_hour_and_resumed_ends_as_one_run_does(pg_cluster):
    admin = pg_cluster.url("postgres")
    whole = figures_line(run_bench(admin, "--timings", "fixed", "--seed", "6", subscriptions=40, days=2))
    try:
        first = run_bench(admin, "--timings", "fixed", "--seed", "6", "--stop-after-hours", "30",
                          subscriptions=40, days=2)
        assert first.returncode == 0, first.stderr
        assert "stopped after 30 of 48 simulated hours" in first.stdout
        assert "renewals collected" not in first.stdout  # no figures from half a run
        with psycopg.connect(pg_cluster.url("bench_sim_fixed_hour_and_day_6")) as conn:
            assert conn.execute("select hours_done from bench.progress").fetchone()[0] == 30
        second = run_bench(admin, "--timings", "fixed", "--seed", "6", "--resume", subscriptions=40, days=2)
        assert figures_line(second) == whole
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('drop database if exists "bench_sim_fixed_hour_and_day_6" with (force)')


def test_serving_on_two_connections_changes_no_outcome(pg_cluster):
    # Fixed hours draw no random numbers and the clock stands still within a simulated hour: the same
    # population gives the same figures, to the unit, however the batches are served.
    def figures(workers: str) -> str:
        return figures_line(run_bench(pg_cluster.url("postgres"), "--timings", "fixed", "--seed", "5",
                                      "--serve-workers", workers, "--batch", "2", subscriptions=60))

    one = figures("1")
    assert "charge calls" in one
    assert figures("2") == one
