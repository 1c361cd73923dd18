"""`carrierpay bench`: the end-to-end payment benchmark on a private, throwaway embedded cluster.

Three measurements on the same cluster, with the same settings, in the same run:

1. pgbench TPC-B-like (`pgbench -i -s 10`, then `-c 8 -j 2 -T <duration>`): the machine's reference.
2. The full payment path at saturation: `api.charge` from concurrent SQL clients → adapter daemons
   (`AdapterDaemon` in separate processes, with an in-process fast connector: a balance model and a
   ledger of its own, no HTTP, no artificial latency) → `adapter.complete_calls` → ledger,
   entitlement, events, merchant notification.
3. The renewal path: N subscriptions due at once, queued by `sched.run_due` (carrier TPS and lookahead
   raised so the budget never caps it), then settled by the same daemons.

At the end every journal must balance and the simulator's ledger must equal ours (sum charged ==
carrier_receivable); otherwise the command exits non-zero. Results and how to read them:
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from carrierpay import queries

CARRIER = "bench_ng"
HTTP_TARGET = 0.70  # bench --http: payments/s through the HTTP API, at least this share of the SQL path's
MERCHANT = "bench"
CURRENCY = "NGN"
ONE_TIME_PRICE = 20000
RENEWAL_PRICE = 10000
PAYMENT_PREFIX = "+23480"  # api.charge numbers
RENEWAL_PREFIX = "+23481"  # renewal subscribers
LONG_RUN_WINDOW = 300  # seconds compared at each end of a long run
CARRIER_SPEC = {
    "code": CARRIER, "name": "Bench NG", "country": "NG", "mcc": "621", "mnc": "99", "currency": CURRENCY,
    "timezone": "Africa/Lagos", "number_ranges": [PAYMENT_PREFIX, RENEWAL_PREFIX],
    "throughput": {"tps": 1_000_000}, "regulation": "NG", "terms": {"carrier_share_bp": 4000},
    "operations": {op: {"pattern": "sync"} for op in ("charge", "refund", "balance", "status", "send_sms")},
}


@dataclass
class BenchOptions:
    duration: float = 60.0
    clients: int = 8
    renewals: int = 1_000_000
    adapters: int = 2
    batch: int = 500
    pgbench_scale: int = 10
    pgbench: bool = True
    fast: bool = False
    warmup: float = 5.0
    backlog: int = 20_000
    keep: bool = False
    profile: bool = False  # pg_stat_statements.track = all, track_functions = pl: slower, but shows where
    py_spy: bool = False  # sample the adapter daemons with py-spy during the payment window
    http: bool = False  # also pay through the merchant HTTP API (createPayment), and compare with api.charge
    api_processes: int = 0  # API server processes for --http (0: one per core)
    home: Path | None = None
    out: Callable[[str], None] = print

    @classmethod
    def smoke(cls, **overrides: Any) -> BenchOptions:
        values = {"duration": 4.0, "clients": 4, "renewals": 10_000, "pgbench_scale": 1, "warmup": 1.0,
                  "backlog": 2_000} | overrides
        return cls(**values)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# -- the fast carrier ------------------------------------------------------------------------------


class FastCarrier:
    """A carrier in memory: each MSISDN starts with a balance derived from its number (1 in 20 has
    none), a charge takes from it or fails with insufficient_funds, and every collected amount is
    kept in the carrier's own ledger, to be compared with ours at the end."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.charged: Counter[str] = Counter()  # currency -> minor units
        self.charges = 0
        self.refunded: Counter[str] = Counter()
        self.calls = 0
        self._ref = 0

    def _balance(self, msisdn: str) -> int:
        if msisdn not in self.balances:
            self.balances[msisdn] = 0 if zlib.crc32(msisdn.encode()) % 20 == 0 else 10_000_000
        return self.balances[msisdn]

    async def execute(self, call: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self._ref += 1
        ref = f"F{os.getpid()}-{self._ref}"
        operation = call.get("operation")
        if operation == "charge":
            msisdn, amount = call["msisdn"], int(call["amount_minor"])
            if self._balance(msisdn) < amount:
                return {"outcome": "failed", "reason": "insufficient_funds", "carrier_code": "NOFUNDS"}
            self.balances[msisdn] -= amount
            self.charged[call["currency"]] += amount
            self.charges += 1
            return {"outcome": "succeeded", "carrier_ref": ref, "amount_minor": amount, "carrier_code": "OK"}
        if operation == "refund":
            self.refunded[call["currency"]] += int(call["amount_minor"])
            return {"outcome": "succeeded", "carrier_ref": ref}
        return {"outcome": "succeeded", "carrier_ref": ref}

    def ledger(self) -> dict[str, Any]:
        return {"charged": dict(self.charged), "charges": self.charges, "refunded": dict(self.refunded),
                "calls": self.calls}


def run_daemon_process(url: str, batch: int, ledger_file: str) -> None:
    """One adapter daemon process with the fast carrier; writes its carrier ledger at exit (SIGTERM)."""
    from carrierpay.adapters.daemon import AdapterDaemon
    from carrierpay.lifecycle import install_stop_handlers

    carrier = FastCarrier()

    async def factory(code: str, spec: dict) -> FastCarrier:
        return carrier

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        daemon = AdapterDaemon(url, factory, batch=batch, poll_interval=0.05, worker=f"bench:{os.getpid()}")
        await daemon.run(stop)

    asyncio.run(main())
    Path(ledger_file).write_text(json.dumps(carrier.ledger()))


class Daemons:
    """N adapter daemon processes (`python -m carrierpay.benchmarks.payment daemon ...`)."""

    def __init__(self, url: str, count: int, batch: int, workdir: Path):
        self.url, self.count, self.batch, self.workdir = url, count, batch, workdir
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.ledger: dict[str, Any] = {"charged": Counter(), "charges": 0, "refunded": Counter(), "calls": 0}

    def start(self) -> None:
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        for _ in range(self.count):
            ledger_file = self.workdir / f"ledger-{len(self.procs)}-{time.monotonic_ns()}.json"
            proc = subprocess.Popen(
                [sys.executable, "-m", "carrierpay.benchmarks.payment", "daemon", self.url, str(self.batch),
                 str(ledger_file)],
                env=env, stdout=subprocess.DEVNULL, stderr=ledger_file.with_suffix(".log").open("w"),
            )
            self.procs.append((proc, ledger_file))

    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.procs]

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, ledger_file in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not ledger_file.exists():
                log_file = ledger_file.with_suffix(".log")
                tail = "\n".join(log_file.read_text().strip().splitlines()[-5:]) if log_file.exists() else ""
                raise RuntimeError(f"adapter daemon {proc.pid} exited without its ledger: {tail}")
            part = json.loads(ledger_file.read_text())
            self.ledger["charged"].update(part["charged"])
            self.ledger["refunded"].update(part["refunded"])
            self.ledger["charges"] += part["charges"]
            self.ledger["calls"] += part["calls"]
        self.procs.clear()


# -- helpers ---------------------------------------------------------------------------------------


PY_SPY_RATE = 50  # samples per second per daemon


def start_py_spy(daemons: Daemons, seconds: float) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy sampling each adapter daemon for `seconds` (non-idle stacks only, so the sample count
    divided by seconds × rate is how busy the daemon's Python was)."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("--py-spy needs py-spy on PATH: pip install -e '.[bench]'")
    spies = []
    for pid in daemons.pids():
        path = daemons.workdir / f"py-spy-{pid}.txt"
        spy = subprocess.Popen([binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(path),
                                "--rate", str(PY_SPY_RATE), "--duration", str(max(1, int(seconds))), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spies.append((spy, path))
    return spies


def summarise_py_spy(paths: list[Path], *, seconds: float, rate: int, top: int = 12) -> list[str]:
    """Busy share of the daemons and the functions they spent it in (inclusive, by sample count)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")[1:]]
            for frame in set(frames):
                inclusive[frame] += n
            if frames:
                own[frames[-1]] += n
    if not samples:
        return ["no samples (py-spy could not attach?)"]
    possible = len(paths) * seconds * rate
    lines = [f"{len(paths)} daemons busy {100 * samples / possible:.0f}% of the window ({samples} samples)"]
    # Frames under every sample (the process's entry points) say nothing; show what the time went to.
    lines += [f"{100 * n / samples:5.1f}% incl  {frame}" for frame, n in inclusive.most_common(top * 4)
              if ("carrierpay" in frame or "psycopg" in frame) and n < 0.95 * samples][:top]
    lines += [f"{100 * n / samples:5.1f}% self  {frame}" for frame, n in own.most_common(top // 2)]
    return lines


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[int, float]:
    if not values:
        return {p: float("nan") for p in points}
    ordered = sorted(values)
    return {p: ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] for p in points}


def lsn(position: int) -> str:
    """A WAL position in bytes as PostgreSQL writes an LSN."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


# Where a window's WAL went, by the relation of each record's first block (heap or index), else by
# resource manager (commits, ...). pg_walinspect reads the WAL files themselves: a bench-only query.
WAL_BY_RELATION = """
with records as (
    select w.record_length, w.resource_manager,
           pg_catalog.pg_filenode_relation(0, substring(w.block_ref from 'rel [0-9]+/[0-9]+/([0-9]+)')::oid) as rel
    from pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn) w
)
select coalesce(rel::text, '(' || resource_manager || ')'), sum(record_length)::bigint, count(*)
from records group by 1 order by 2 desc limit %(top)s
"""


def wal_by_relation(conn: psycopg.Connection, start: int, end: int, top: int = 30) -> list[tuple[str, int, int]]:
    """(relation or record kind, WAL bytes, records) for the WAL written between two positions."""
    return conn.execute(WAL_BY_RELATION, {"start": lsn(start), "end": lsn(end), "top": top}).fetchall()


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def db_counters(conn: psycopg.Connection) -> tuple[int, int, float]:
    """(xact_commit of this database, WAL position in bytes, server time as epoch seconds)."""
    row = conn.execute(
        "select xact_commit, pg_current_wal_lsn() - '0/0'::pg_lsn, extract(epoch from clock_timestamp())"
        " from pg_stat_database where datname = current_database()"
    ).fetchone()
    conn.execute("select pg_stat_clear_snapshot()")
    return int(row[0]), int(row[1]), float(row[2])


# -- setup -----------------------------------------------------------------------------------------


def setup_world(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select admin.onboard_carrier(%s)", [json.dumps(CARRIER_SPEC)])
        conn.execute("select admin.add_merchant(%s, 'Bench Games', 'https://bench.example/hooks', 1000)", [MERCHANT])
        conn.execute("select admin.add_product(%s, 'gems', '100 gems')", [MERCHANT])
        conn.execute("select admin.add_product(%s, 'club', 'Gem club')", [MERCHANT])
        conn.execute("select admin.add_price_point(%s, 'gems', 'one_time', %s, %s, 'gems_100', p_carrier => %s)",
                     [MERCHANT, ONE_TIME_PRICE, CURRENCY, CARRIER])
        conn.execute("select admin.add_price_point(%s, 'club', 'daily', %s, %s, 'club_day', p_carrier => %s)",
                     [MERCHANT, RENEWAL_PRICE, CURRENCY, CARRIER])
        conn.execute("create extension if not exists pg_stat_statements")
        conn.execute("create extension if not exists pg_walinspect")


def pgbench(cluster, scale: int, clients: int, duration: float, out: Callable[[str], None]) -> float:
    binary = cluster.bindir / "pgbench"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists pgbench")
        conn.execute("create database pgbench")
    base = [str(binary), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    env = os.environ | ({"PGPASSWORD": cluster.password} if cluster.password else {})
    subprocess.run([*base, "-i", "-q", "-s", str(scale), "pgbench"], check=True, capture_output=True, text=True,
                   env=env)
    seconds = max(1, int(round(duration)))
    result = subprocess.run([*base, "-c", str(clients), "-j", "2", "-T", str(seconds), "pgbench"],
                            check=True, capture_output=True, text=True, env=env)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    if not match:
        raise RuntimeError(f"pgbench printed no tps: {result.stdout[-500:]}")
    tps = float(match.group(1))
    out(f"pgbench TPS: {tps:.1f} (TPC-B-like, scale {scale}, {clients} clients, 2 threads, {seconds} s; {load()})")
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database pgbench")
    return tps


# -- the payment path ------------------------------------------------------------------------------


class WaitSampler:
    """Samples pg_stat_activity's wait events of active backends of the benchmark database."""

    def __init__(self) -> None:
        self.samples = 0
        self.events: Counter[str] = Counter()

    async def run(self, url: str, stop: asyncio.Event, interval: float = 0.1) -> None:
        # Connected to another database so that the samples add no commits to the measured one.
        dbname = url.rsplit("/", 1)[1]
        async with await psycopg.AsyncConnection.connect(url.rsplit("/", 1)[0] + "/postgres",
                                                         autocommit=True) as conn:
            while not stop.is_set():
                cur = await conn.execute(
                    "select coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) from pg_stat_activity"
                    " where datname = %s and state = 'active' and backend_type = 'client backend' group by 1",
                    [dbname])
                for event, count in await cur.fetchall():
                    self.events[event] += count
                self.samples += 1
                try:
                    await asyncio.wait_for(stop.wait(), timeout=interval)
                except TimeoutError:
                    pass

    def summary(self, top: int = 8) -> str:
        if not self.samples:
            return "no samples"
        total = sum(self.events.values()) or 1
        return ", ".join(f"{event} {count / total:.0%}" for event, count in self.events.most_common(top))

    def hot_row_waits(self) -> int:
        return sum(count for event, count in self.events.items()
                   if event in ("Lock:tuple", "Lock:transactionid"))


async def charge_clients(url: str, opts: BenchOptions, run_id: str, latencies: list[tuple[float, float]],
                         stop: asyncio.Event, gate: asyncio.Event, errors: Counter) -> int:
    merchant_url = url.replace("postgres@", f"cp_merchant_{MERCHANT}@", 1)
    done = 0

    async def client(index: int) -> None:
        nonlocal done
        rng = random.Random(f"{run_id}-{index}")
        async with await psycopg.AsyncConnection.connect(merchant_url, autocommit=True, prepare_threshold=0) as conn:
            n = 0
            while not stop.is_set():
                if not gate.is_set():
                    await gate.wait()
                    continue
                n += 1
                msisdn = f"{PAYMENT_PREFIX}{rng.randrange(10**8):08d}"
                started = time.perf_counter()
                try:
                    await conn.execute("select api.charge(%s, %s, 'gems', %s)",
                                       [MERCHANT, msisdn, f"{run_id}-{index}-{n}"])
                except psycopg.errors.DatabaseError as exc:  # count, keep going (reported at the end)
                    errors[type(exc).__name__] += 1
                    continue
                ended = time.perf_counter()
                latencies.append((ended, ended - started))
                done += 1

    await asyncio.gather(*(client(i) for i in range(opts.clients)))
    return done


async def http_charge_clients(url: str, opts: BenchOptions, run_id: str, latencies: list[tuple[float, float]],
                              stop: asyncio.Event, gate: asyncio.Event, errors: Counter) -> int:
    """The same load as charge_clients, through the merchant HTTP API: an API server in this process, a
    bearer token per client (fetched again before it expires), one createPayment per payment."""
    import aiohttp

    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("select admin.add_api_client(%s, null, 'gems')", [MERCHANT]).fetchone()[0]
        # The benchmark measures the server, not the client's request limit.
        conn.execute(queries.SET_API_CLIENT_RATE_LIMIT, {"client_id": client["client_id"],
                                                          "requests_per_second": 100000})
        amount = conn.execute("select cp.major_units(%s, %s)::text", [ONE_TIME_PRICE, CURRENCY]).fetchone()[0]
    done = 0

    async def token(session: aiohttp.ClientSession, base: str) -> tuple[str, float]:
        async with session.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials",
                                                               "client_id": client["client_id"],
                                                               "client_secret": client["client_secret"]}) as r:
            answer = await r.json()
        return answer["access_token"], time.monotonic() + answer["expires_in"] / 2

    async def one(index: int, base: str) -> None:
        nonlocal done
        rng = random.Random(f"{run_id}-{index}")
        async with aiohttp.ClientSession() as session:
            bearer, renew_at = await token(session, base)
            n = 0
            while not stop.is_set():
                if not gate.is_set():
                    await gate.wait()
                    continue
                if time.monotonic() > renew_at:
                    bearer, renew_at = await token(session, base)
                n += 1
                msisdn = f"{PAYMENT_PREFIX}{rng.randrange(10**8):08d}"
                key = f"{run_id}-{index}-{n}"
                body = (f'{{"amountTransaction": {{"phoneNumber": "{msisdn}", "clientCorrelator": "{key}", '
                        f'"referenceCode": "{key}", "paymentAmount": {{"chargingInformation": '
                        f'{{"amount": {amount}, "currency": "{CURRENCY}", "description": "gems"}}}}}}}}')
                started = time.perf_counter()
                async with session.post(f"{base}/carrier-billing/v0.5/payments", data=body,
                                        headers={"Authorization": f"Bearer {bearer}",
                                                 "Content-Type": "application/json"}) as r:
                    await r.read()
                    status = r.status
                if status != 201:  # count, keep going (reported at the end)
                    errors[f"HTTP {status}"] += 1
                    continue
                ended = time.perf_counter()
                latencies.append((ended, ended - started))
                done += 1

    with api_servers(url, opts) as base:
        await asyncio.gather(*(one(i, base) for i in range(opts.clients)))
    return done


@contextlib.contextmanager
def api_servers(url: str, opts: BenchOptions) -> Iterator[str]:
    """`carrierpay api serve` as it runs in production: its own processes (one per core, sharing the port),
    not the load generator's; yields its base URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = opts.api_processes or os.cpu_count() or 1
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server never blocks on a full pipe
    server = subprocess.Popen(
        [sys.executable, "-m", "carrierpay", "api", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--processes", str(processes), "--max-connections", "4096", "--database-url", url],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the API server did not start: {log.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        yield base
    finally:
        log.close()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


async def backlog_gate(url: str, limit: int, gate: asyncio.Event, stop: asyncio.Event) -> None:
    """Back-pressure: pause the clients while more than `limit` calls wait, so we measure what the
    whole path sustains rather than how fast a queue can grow."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute("select count(*) from cp.call_queue")
            queued = (await cur.fetchone())[0]
            if queued > limit:
                gate.clear()
            elif queued < limit // 2:
                gate.set()
            await asyncio.sleep(0.2)
    gate.set()


async def wait_settled(url: str, where: str, timeout: float) -> int:
    """Wait until no procedure matching `where` is still pending or in flight; returns how many are."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                f"select count(*) from cp.procedure where kind = 'charge' and status in ('pending', 'in_flight')"
                f" and {where}")
            left = (await cur.fetchone())[0]
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.2)


def payment_phase(url: str, opts: BenchOptions, daemons: Daemons, report: Report, pgbench_tps: float | None,
                  *, http: bool = False) -> None:
    """The payment load for opts.duration, through api.charge, or with `http` through createPayment; its
    figures go to report.figures (prefixed `http_` for the HTTP path)."""
    base_out = opts.out
    path = "HTTP createPayment" if http else "SQL api.charge"

    def out(line: str) -> None:
        base_out(f"[{path}] {line}")

    run_id = f"b{os.getpid()}{'h' if http else ''}"
    latencies: list[tuple[float, float]] = []
    errors: Counter[str] = Counter()
    sampler = WaitSampler()
    window: dict[str, Any] = {}

    async def main() -> int:
        stop, sampler_stop, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
        gate.set()
        gate_task = asyncio.create_task(backlog_gate(url, opts.backlog, gate, stop))
        load = http_charge_clients if http else charge_clients
        clients = asyncio.create_task(load(url, opts, run_id, latencies, stop, gate, errors))
        await asyncio.sleep(opts.warmup)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select pg_stat_statements_reset()")
            if opts.profile:
                conn.execute("select pg_stat_reset_single_function_counters(oid) from pg_proc"
                             " where pronamespace::regnamespace::text in ('cp', 'api', 'adapter', 'sched')")
            window["start"] = db_counters(conn)
            window["t0"] = time.perf_counter()
        sampler_task = asyncio.create_task(sampler.run(url, sampler_stop))
        spies = start_py_spy(daemons, opts.duration) if opts.py_spy else []
        await asyncio.sleep(opts.duration)
        with psycopg.connect(url, autocommit=True) as conn:
            window["end"] = db_counters(conn)
            window["t1"] = time.perf_counter()
            window["queued_at_end"] = conn.execute("select count(*) from cp.call_queue").fetchone()[0]
        sampler_stop.set()
        stop.set()
        done = await clients
        await gate_task
        await sampler_task
        for spy, _ in spies:
            await asyncio.to_thread(spy.wait)
        window["py_spy"] = [path for _, path in spies]
        left = await wait_settled(url, "true", timeout=120)
        if left:
            report.failures.append(f"{left} payments still pending or in flight after draining")
        return done

    done = asyncio.run(main())
    (c0, w0, s0), (c1, w1, s1) = window["start"], window["end"]
    with psycopg.connect(url, autocommit=True) as conn:
        final, succeeded = conn.execute(
            """select count(*), count(*) filter (where status = 'succeeded')
               from cp.procedure
               where kind = 'charge' and subscription_id is null and status in ('succeeded', 'failed')
                 and final_at >= to_timestamp(%s) and final_at < to_timestamp(%s)""", [s0, s1]).fetchone()
        p50, p95, p99 = _ms_list(conn, s0, s1)
        # A long run (--duration 1800) compares its first and last five minutes: the cost of a payment
        # must not grow with the tables.
        ends = None
        if s1 - s0 >= 2 * LONG_RUN_WINDOW:
            ends = conn.execute(
                """select count(*) filter (where final_at < to_timestamp(%(s0)s + %(w)s)),
                          count(*) filter (where final_at >= to_timestamp(%(s1)s - %(w)s))
                   from cp.procedure
                   where kind = 'charge' and subscription_id is null and status in ('succeeded', 'failed')
                     and final_at >= to_timestamp(%(s0)s) and final_at < to_timestamp(%(s1)s)""",
                {"s0": s0, "s1": s1, "w": LONG_RUN_WINDOW}).fetchone()
        top = conn.execute(
            """select calls, round(total_exec_time::numeric, 1), round((total_exec_time / calls)::numeric, 3),
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
               from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
               order by total_exec_time desc limit %s""", [25 if opts.profile else 5]).fetchall()
        functions = conn.execute(
            """select calls, round(total_time::numeric, 1), round(self_time::numeric, 1), schemaname || '.' || funcname
               from pg_stat_user_functions order by self_time desc limit 25""").fetchall() if opts.profile else []
    seconds = s1 - s0
    rate = final / seconds if seconds > 0 else 0.0
    window_lat = [lat for ended, lat in latencies if window["t0"] <= ended < window["t1"]]
    lp = percentiles(window_lat)
    accepted = len(window_lat) / (window["t1"] - window["t0"])
    out(f"payments/s (sustained): {rate:.1f} final charges over {seconds:.1f} s "
        f"({succeeded} succeeded, {final - succeeded} failed; api.charge accepted {accepted:.1f}/s; "
        f"{window['queued_at_end']} queued at end; {opts.clients} clients, {opts.adapters} adapters; {load()})")
    out(f"api.charge latency ms: p50 {lp[50] * 1000:.1f} p95 {lp[95] * 1000:.1f} p99 {lp[99] * 1000:.1f}")
    if ends is not None:
        first, last = (n / LONG_RUN_WINDOW for n in ends)
        report.figures["last_to_first"] = last / first if first else 0.0
        out(f"long run: first {LONG_RUN_WINDOW // 60} min {first:.1f} payments/s, last {LONG_RUN_WINDOW // 60} min "
            f"{last:.1f} payments/s (last ÷ first {report.figures['last_to_first']:.2f})")
    out(f"time-to-final-state ms: p50 {p50:.1f} p95 {p95:.1f} p99 {p99:.1f}")
    wal_tables: list[tuple[str, int, int]] = []
    if final:
        out(f"per payment: {(c1 - c0) / final:.2f} commits, {(w1 - w0) / final:.0f} WAL bytes")
        with psycopg.connect(url, autocommit=True) as conn:
            wal_tables = wal_by_relation(conn, w0, w1)
        for relation, size, records in wal_tables:
            out(f"WAL per payment: {size / final:7.0f} bytes {records / final:5.2f} records  {relation}")
    if pgbench_tps:
        out(f"payments/s ÷ pgbench TPS: {rate / pgbench_tps:.2f}")
    out(f"wait events at saturation ({sampler.samples} samples): {sampler.summary()}")
    out(f"hot-row waits (Lock:tuple, Lock:transactionid): {sampler.hot_row_waits()} backend samples")
    for calls, total, mean, query in top:
        out(f"statement: {calls} calls {total} ms total {mean} ms mean: {query}")
    for calls, total, own, name in functions:
        out(f"function: {calls} calls {total} ms total {own} ms self: {name}")
    if window.get("py_spy"):
        for line in summarise_py_spy(window["py_spy"], seconds=opts.duration, rate=PY_SPY_RATE):
            out(f"daemons (py-spy): {line}")
    if errors:
        out(f"api.charge errors: {dict(errors)}")
        report.failures.append(f"api.charge raised {sum(errors.values())} errors: {dict(errors)}")
    figures = report.figures
    if http:
        figures = {}
    figures.update(payments_per_s=rate, accepted_per_s=accepted, charges=done, final=final,
                          charge_p50_ms=lp[50] * 1000, charge_p95_ms=lp[95] * 1000, charge_p99_ms=lp[99] * 1000,
                          final_p50_ms=p50, final_p95_ms=p95, final_p99_ms=p99,
                          commits_per_payment=(c1 - c0) / final if final else None,
                          wal_per_payment=(w1 - w0) / final if final else None,
                          wal_per_payment_by_relation={name: size / final for name, size, _ in wal_tables},
                          hot_row_waits=sampler.hot_row_waits(), waits=dict(sampler.events),
                          top_statements=[list(map(str, row)) for row in top])
    if http:
        report.figures.update({f"http_{name}": value for name, value in figures.items()})
    if final == 0:
        # None inside the measuring window is a figure of a starved machine (the smoke run's window is
        # seconds long); none by the end of the run, drained, is a broken payment path.
        with psycopg.connect(url, autocommit=True) as conn:
            ever = conn.execute("select count(*) from cp.procedure where kind = 'charge' and subscription_id is null "
                                "and status in ('succeeded', 'failed')").fetchone()[0]
        if ever == 0:
            report.failures.append(f"no payment reached a final state ({path})")
        else:
            out(f"no payment reached a final state inside the measuring window; {ever} did by the end of the run")


def _ms_list(conn: psycopg.Connection, s0: float, s1: float) -> list[float]:
    row = conn.execute(
        """select percentile_cont(array[0.5, 0.95, 0.99]) within group
                  (order by extract(epoch from final_at - created_at) * 1000)
           from cp.procedure
           where kind = 'charge' and subscription_id is null and status in ('succeeded', 'failed')
             and created_at >= to_timestamp(%s) and created_at < to_timestamp(%s)""", [s0, s1]).fetchone()
    return list(row[0] or [float("nan")] * 3)


# -- the renewal path ------------------------------------------------------------------------------


def create_due_subscriptions(url: str, count: int) -> None:
    """`count` active daily subscriptions, all due now (bulk-loaded: setup, not measured)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # setup only: skip event triggers
        ids = conn.execute(
            """select (select carrier_id from cp.carrier where code = %(carrier)s),
                      (select merchant_id from cp.merchant where code = %(merchant)s),
                      p.product_id, pp.price_point_id
               from cp.product p join cp.price_point pp using (product_id)
               where p.code = 'club' and pp.plan = 'daily'""",
            {"carrier": CARRIER, "merchant": MERCHANT}).fetchone()
        carrier_id, merchant_id, product_id, price_point_id = ids
        conn.execute(
            """insert into cp.subscriber (msisdn, carrier_id, created_at)
               select %(prefix)s || lpad(g::text, 8, '0'), %(carrier)s, now() - interval '1 day'
               from generate_series(1, %(n)s) g""",
            {"prefix": RENEWAL_PREFIX, "carrier": carrier_id, "n": count})
        conn.execute(
            """insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status,
                                            price_point_id, anchor_local, period_index, next_charge_at,
                                            paid_through, status_since, created_at)
               select %(merchant)s, s.subscriber_id, %(carrier)s, %(product)s, 'daily', 'active', %(pp)s,
                      (cp.clock_now() - interval '1 day 1 minute') at time zone 'Africa/Lagos', 1,
                      cp.clock_now() - interval '1 minute', cp.clock_now() - interval '1 minute',
                      cp.clock_now() - interval '1 day', cp.clock_now() - interval '1 day'
               from cp.subscriber s where s.msisdn like %(like)s""",
            {"merchant": merchant_id, "carrier": carrier_id, "product": product_id, "pp": price_point_id,
             "like": RENEWAL_PREFIX + "%"})
        conn.execute("set session_replication_role = origin")
        conn.execute("vacuum analyze cp.subscriber")
        conn.execute("vacuum analyze cp.subscription")


def renewal_phase(url: str, opts: BenchOptions, daemons: Daemons, report: Report) -> None:
    out = opts.out
    count = opts.renewals
    started = time.perf_counter()
    create_due_subscriptions(url, count)
    out(f"renewals: {count} due subscriptions created in {time.perf_counter() - started:.1f} s (setup)")
    lookahead = 2000  # 1,000,000 tps × 2000 s: the budget never caps the queue (and fits an integer)
    queued = 0
    with psycopg.connect(url, autocommit=True) as conn:
        c0, w0, _ = db_counters(conn)
        started = time.perf_counter()
        while queued < count:
            got = conn.execute("select sched.run_due(%s, %s)", [10_000, lookahead]).fetchone()[0]
            queued += got
            if got == 0:
                break
        elapsed = time.perf_counter() - started
        c1, w1, _ = db_counters(conn)
    rate = queued / elapsed if elapsed else 0.0
    out(f"renewals queued/s: {rate:.0f} ({queued} in {elapsed:.1f} s by sched.run_due; "
        f"{(w1 - w0) / max(queued, 1):.0f} WAL bytes each; {load()})")
    if queued != count:
        report.failures.append(f"only {queued} of {count} due renewals were queued")
    daemons.start()
    started = time.perf_counter()
    left = asyncio.run(wait_settled(url, "subscription_id is not null", timeout=max(600.0, count / 100)))
    elapsed = time.perf_counter() - started
    out(f"renewals settled/s: {(queued - left) / elapsed:.0f} ({queued - left} in {elapsed:.1f} s by "
        f"{opts.adapters} adapters; {load()})")
    if left:
        report.failures.append(f"{left} renewal charges not settled")
    report.figures.update(renewals_queued=queued, renewals_queued_per_s=rate, renewal_queue_seconds=elapsed,
                          renewals_settled_per_s=(queued - left) / elapsed)


# -- money checks ----------------------------------------------------------------------------------


def money_checks(url: str, ledger: dict[str, Any], report: Report) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        unbalanced = conn.execute(
            "select count(*) from (select journal_id from cp.ledger_entry group by journal_id"
            " having sum(amount_minor) <> 0) x").fetchone()[0]
        journals, empty = conn.execute(
            "select count(*), count(*) filter (where not exists"
            " (select 1 from cp.ledger_entry e where e.journal_id = j.journal_id)) from cp.journal j").fetchone()
        receivable = dict(conn.execute(
            """select a.currency, coalesce(sum(e.amount_minor), 0)::bigint
               from cp.ledger_account a join cp.carrier c using (carrier_id)
               left join cp.ledger_entry e using (account_id)
               where a.kind = 'carrier_receivable' and c.code = %s group by a.currency""", [CARRIER]).fetchall())
        succeeded = conn.execute(
            "select count(*) from cp.procedure where kind = 'charge' and status = 'succeeded'").fetchone()[0]
        unsettled = conn.execute(
            "select count(*) from cp.procedure where status in ('pending', 'in_flight', 'unknown')").fetchone()[0]
        dangling = conn.execute("select child, reference, rows from report.dangling_references").fetchall()
    charged = {cur: int(v) for cur, v in ledger["charged"].items() if v}
    report.figures.update(receivable=receivable, succeeded_charges=succeeded)
    lines = [
        f"money: {journals} journals, {unbalanced} unbalanced, {empty} without entries",
        f"money: simulator charged {charged} in {ledger['charges']} charges; "
        f"carrier_receivable {receivable} for {succeeded} succeeded charges",
    ]
    if unbalanced or empty:
        report.failures.append(f"{unbalanced} unbalanced journals, {empty} journals without entries")
    if charged != {cur: v for cur, v in receivable.items() if v}:
        report.failures.append(f"simulator ledger {charged} != carrier_receivable {receivable}")
    if ledger["charges"] != succeeded:
        report.failures.append(f"simulator counted {ledger['charges']} charges, we have {succeeded} succeeded")
    if unsettled:
        report.failures.append(f"{unsettled} procedures not settled")
    lines.append(f"money: {len(dangling)} kinds of dangling reference")
    if dangling:
        report.failures.append("dangling references: " + ", ".join(f"{c}.{r} ×{n}" for c, r, n in dangling))
    lines.append("money checks: " + ("ok" if not report.failures else "FAILED: " + "; ".join(report.failures)))
    report.lines.extend(lines)


# -- the whole run ---------------------------------------------------------------------------------


def run(opts: BenchOptions) -> Report:
    from carrierpay import migrate
    from carrierpay.embedded import EmbeddedCluster, create_available_extensions

    report = Report()
    out = opts.out
    home = opts.home or Path(tempfile.mkdtemp(prefix="carrierpay-bench-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home / "cluster", fast=opts.fast)
    daemons: Daemons | None = None
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            settings = dict(conn.execute(
                "select name, current_setting(name) from pg_settings where name = any(%s)",
                [["server_version", "shared_buffers", "fsync", "synchronous_commit", "full_page_writes",
                  "max_wal_size", "wal_buffers", "checkpoint_timeout", "work_mem"]]).fetchall())
            conn.execute("create database carrierpay_bench")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        version = settings.pop("server_version")
        out(f"machine: {os.cpu_count()} cores, {memory:.1f} GiB memory; PostgreSQL {version}; "
            + " ".join(f"{k}={v}" for k, v in sorted(settings.items())))
        url = cluster.url("carrierpay_bench")
        create_available_extensions(url)
        migrate.migrate(url)
        setup_world(url)
        if opts.profile:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("alter database carrierpay_bench set pg_stat_statements.track = 'all'")
                conn.execute("alter database carrierpay_bench set track_functions = 'pl'")
        tps = None
        if opts.pgbench:
            tps = pgbench(cluster, opts.pgbench_scale, 8, opts.duration, out)
            report.figures["pgbench_tps"] = tps
        daemons = Daemons(url, opts.adapters, opts.batch, home)
        daemons.start()
        payment_phase(url, opts, daemons, report, tps)
        if opts.http:
            # The same load through the HTTP API, in the same run: the ratio is what the API costs.
            payment_phase(url, opts, daemons, report, tps, http=True)
            sql_rate, http_rate = report.figures["payments_per_s"], report.figures["http_payments_per_s"]
            ratio = http_rate / sql_rate if sql_rate else 0.0
            report.figures["http_to_sql"] = ratio
            out(f"HTTP ÷ SQL payments/s: {ratio:.2f} (target at least {HTTP_TARGET:.2f}; HTTP {http_rate:.1f}/s, "
                f"SQL {sql_rate:.1f}/s, {opts.api_processes or os.cpu_count()} API server processes; {load()})")
        daemons.stop()
        if opts.renewals:
            renewal_phase(url, opts, daemons, report)
            daemons.stop()
        money_checks(url, daemons.ledger, report)
        for line in report.lines:
            out(line)
        report.lines.clear()
    finally:
        if daemons is not None and daemons.procs:
            try:
                daemons.stop()
            except RuntimeError:
                pass
        cluster.stop()
        if not opts.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            out(f"cluster kept in {home}")
    return report


def main(argv: list[str]) -> int:
    if argv and argv[0] == "daemon":
        run_daemon_process(argv[1], int(argv[2]), argv[3])
        return 0
    raise SystemExit("usage: carrierpay bench (this module's entry point is for the daemon processes)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
