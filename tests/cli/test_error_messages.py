"""Errors an operator can act on: the right hint when a database is missing, parser errors as one line
(file or option, line, column, what is wrong), and what a held demo stopped on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy.engine import make_url

from carrierpay.adapters.secrets import Secrets
from carrierpay.adapters.smpp.config import SmppConfigError, load_secrets_file
from tests.cli.kit import run_cli

NOBODY_LISTENS = "postgresql://postgres:x@127.0.0.1:1/carrierpay"


def run(database_url: str, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(database_url, *args, columns=80, timeout=120, cwd=cwd)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_missing_database_lists_the_carrierpay_databases_of_the_server(db_url, empty_db_url):
    migrated = make_url(db_url).database
    not_carrierpay = make_url(empty_db_url).database
    missing = make_url(db_url).set(database="carrierpay_gone").render_as_string(hide_password=False)
    for args in (("report",), ("db", "status"), ("carrier", "list")):
        result = run(missing, *args)
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr
        error, hint = result.stderr.strip().splitlines()
        assert 'database "carrierpay_gone" does not exist' in error
        assert "is the database running" not in hint
        assert "the server is up" in hint
        assert migrated in hint and not_carrierpay not in hint
        for way in ("--database-url", "CARRIERPAY_DATABASE_URL", f"carrierpay db url --database {migrated}"):
            assert way in hint, (way, hint)

    # A server that does not answer at all: there the question is whether it runs.
    unreachable = run(NOBODY_LISTENS, "report")
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    assert "is the database running? try: carrierpay db status" in unreachable.stderr


def test_bad_json_in_an_option_is_one_line_naming_the_option_and_column():
    line = one_error_line(run(NOBODY_LISTENS, "pay", "charge", "acme", "+2348020000001", "gems",
                              "--metadata", "{bad"))
    assert line == "error: --metadata: not valid JSON at column 2: Expecting property name enclosed in double quotes"
    line = one_error_line(run(NOBODY_LISTENS, "pay", "charge", "acme", "+2348020000001", "gems",
                              "--metadata", '{"a": 1,}'))
    assert "--metadata" in line and "column 9" in line
    line = one_error_line(run(NOBODY_LISTENS, "pay", "charge", "acme", "+2348020000001", "gems",
                              "--metadata", "[1]"))
    assert "--metadata: a JSON object is needed" in line and "an array" in line


BAD_SPEC = "code: broken\nname: Broken\nnumber_ranges: [+4477009, +4477008\ncurrency: GBP\n"


def test_a_yaml_error_in_a_carrier_spec_is_one_line_with_file_line_and_column(tmp_path):
    spec = tmp_path / "broken" / "carrier.yaml"
    spec.parent.mkdir()
    spec.write_text(BAD_SPEC)
    for args in (("carrier", "check", str(spec), "--offline"), ("carrier", "onboard", str(spec))):
        line = one_error_line(run(NOBODY_LISTENS, *args))
        assert str(spec) in line
        assert "not valid YAML at line 4, column 9" in line, line
        assert "while parsing a flow sequence that starts at line 3, column 16" in line
        assert "<unicode string>" not in line and "^" not in line


def test_a_yaml_error_in_the_up_configuration_names_file_line_and_column(tmp_path):
    config = tmp_path / "carrierpay.yaml"
    config.write_text("daemons:\n  adapters: {copies: 2\n")
    result = run(NOBODY_LISTENS, "up", "--config", str(config), "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[0]
    assert error.startswith(f"error: {config}: not valid YAML at line 3, column 1: expected ',' or '}}'"), error
    assert "<unicode string>" not in result.stderr


@pytest.mark.parametrize("name, text, where", [
    ("secrets.yaml", "GB_KEY: [unclosed\n", "line 2, column 1"),
    ("secrets.json", '{"GB_KEY": "x",}', "column 16"),
])
def test_a_broken_secrets_file_is_one_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        Secrets(secrets_file=path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid") and where in message
    if name.endswith(".yaml"):
        with pytest.raises(SmppConfigError) as raised:
            load_secrets_file(path)
        assert "\n" not in str(raised.value) and where in str(raised.value)


def test_ctrl_c_on_a_held_demo_says_what_it_stopped(db_url, tmp_path):
    env = os.environ | {"CARRIERPAY_DATABASE_URL": db_url, "CARRIERPAY_HOME": str(tmp_path), "COLUMNS": "80"}
    demo = subprocess.Popen([sys.executable, "-m", "carrierpay", "demo", "--subscribers", "10", "--days", "1",
                             "--keep"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("finished in"):
                break
        assert any(line.startswith("finished in") for line in seen), "".join(seen)
        for line in demo.stdout:  # the instructions, then it holds
            seen.append(line)
            if "Ctrl-C" in line:
                break
        time.sleep(2)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, rest
    assert "Traceback" not in rest
    stopped = [line for line in rest.splitlines() if line.startswith("stopped ")]
    assert len(stopped) == 1, rest
    assert "simulators" in stopped[0] and "adapters" in stopped[0] and "scheduler" in stopped[0]
    assert "carrierpay_demo stays" in stopped[0]
