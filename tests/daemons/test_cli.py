"""`carrierpay carrier …` and the daemon commands' wiring."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest
from harness import SECRETS, make_simulators
from typer.testing import CliRunner

from carrierpay.cli.main import app
from carrierpay.paths import carriers_root
from carrierpay.simulators import SimClock

runner = CliRunner()


@contextlib.contextmanager
def simulator_in_thread(code: str):
    """A simulator serving from its own event loop, so a synchronous CLI can call it."""
    loop = asyncio.new_event_loop()
    sim = make_simulators(SimClock())[code]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(10)
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def secrets_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("code", ["oneapi_gb", "parlayx_za", "aggregator_ng", "batch_in"])
def test_check_exercises_a_sandbox(secrets_env, code):
    with simulator_in_thread(code) as sim:
        result = runner.invoke(app, ["carrier", "check", f"carriers/{code}", "--base-url", sim.url])
    assert result.exit_code == 0, result.output
    assert "balance" in result.output and "ok" in result.output
    assert sim.ledger.transactions == []  # a check never moves money


def test_check_fails_when_the_sandbox_is_down(secrets_env):
    result = runner.invoke(app, ["carrier", "check", "carriers/oneapi_gb", "--base-url",
                                 f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_an_invalid_spec_lists_each_bad_field_without_a_traceback(tmp_path):
    bad = tmp_path / "carrier.yaml"
    original = carriers_root() / "oneapi_gb" / "carrier.yaml"
    bad.write_text(original.read_text().replace("method: POST", "method: PUTT", 1).replace('mcc: "234"', 'mcc: "2x4"'))
    result = runner.invoke(app, ["carrier", "check", str(bad)])
    assert result.exit_code == 1
    assert "operations.charge.request.method" in result.output
    assert "mcc:" in result.output
    assert "Traceback" not in result.output


def test_onboard_list_show_disable(db_url, monkeypatch):
    monkeypatch.setenv("CARRIERPAY_BASE_URL_PARLAYX_ZA", "http://127.0.0.1:9")
    result = runner.invoke(app, ["carrier", "onboard", "carriers/parlayx_za", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "parlayx_za" in result.output and "onboarded" in result.output
    result = runner.invoke(app, ["carrier", "list", "--database-url", db_url])
    assert result.exit_code == 0 and "parlayx_za" in result.output
    result = runner.invoke(app, ["carrier", "show", "parlayx_za", "--database-url", db_url])
    assert result.exit_code == 0 and "http://127.0.0.1:9" in result.output and "send_sms" in result.output
    result = runner.invoke(app, ["carrier", "disable", "parlayx_za", "--database-url", db_url])
    assert result.exit_code == 0 and "disabled" in result.output
    result = runner.invoke(app, ["carrier", "show", "nope", "--database-url", db_url])
    assert result.exit_code == 1
    result = runner.invoke(app, ["carrier", "disable", "nope", "--database-url", db_url])
    assert result.exit_code == 1 and "CP070" in result.output


def test_scheduler_once_and_reconcile_once(db_url):
    for command in (["scheduler", "run", "--once"], ["reconcile", "run", "--once"]):
        result = runner.invoke(app, [*command, "--database-url", db_url])
        assert result.exit_code == 0, result.output


def test_smpp_carriers_have_a_clear_hook():
    from carrierpay.adapters.registry import build_connector
    from carrierpay.adapters.spec import CarrierSpec

    spec = CarrierSpec(data={"code": "smpp_xx", "transport": "smpp"})
    with pytest.raises(NotImplementedError, match="connector_factory"):
        build_connector(spec, secrets={})


def test_smpp_sessions_need_the_database_for_mo_and_receipts():
    import asyncio

    from carrierpay.adapters.registry import connector_factory

    with pytest.raises(ValueError, match="database URL"):
        asyncio.run(connector_factory()("smsc_za", {"code": "smsc_za", "transport": "smpp"}))


@pytest.mark.parametrize("broken", ["missing", "mismatched"])
def test_callbacks_serve_refuses_an_unusable_certificate_in_one_line(tls_files, tmp_path, broken):
    cert = tmp_path / "missing.pem" if broken == "missing" else tls_files.server_cert
    key = tls_files.client_key  # for "mismatched": a key that is not the certificate's
    result = runner.invoke(app, ["callbacks", "serve", "--port", "0", "--cert", str(cert), "--key", str(key),
                                 "--database-url", "postgresql://nobody@127.0.0.1:9/none"])
    assert result.exit_code == 1
    assert "callback server certificate" in result.output and str(cert) in result.output.replace("\n", "")
    assert "Traceback" not in result.output
