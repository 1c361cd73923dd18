"""Migrations: from empty to head, step by step, repeated, concurrent, and broken SQL."""

from __future__ import annotations

import shutil
import subprocess
import threading

import psycopg
import pytest
from alembic.script import ScriptDirectory

from carrierpay import migrate
from carrierpay.embedded import find_bindir
from carrierpay.paths import sql_root


def schema_dump(url: str) -> str:
    out = subprocess.run(
        [str(find_bindir() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", url],
        capture_output=True, text=True, check=True,
    )
    # pg_dump's \restrict lines carry a random key per run; comments carry nothing of the schema.
    noise = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.stdout.splitlines() if not line.startswith(noise))


def test_migrating_from_empty_matches_step_by_step_upgrade(empty_db_url, pg_cluster):
    migrate.migrate(empty_db_url)
    at_once = schema_dump(empty_db_url)

    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("create database stepwise template template0")
    stepwise_url = pg_cluster.url("stepwise")
    try:
        script = ScriptDirectory(str(sql_root() / "migrations"))
        revisions = [rev.revision for rev in script.walk_revisions()][::-1]
        assert revisions, "no alembic revisions found"
        for rev in revisions:
            migrate.migrate(stepwise_url, revision=rev)
        migrate.migrate(stepwise_url)
        assert schema_dump(stepwise_url) == at_once
    finally:
        with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("drop database stepwise with (force)")


def test_second_run_changes_nothing(empty_db_url):
    first = migrate.migrate(empty_db_url)
    assert first.pending_revisions and first.changed_files
    before = schema_dump(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        stamps = conn.execute("select file_name, applied_at from carrierpay_meta.repeatable_sql").fetchall()
    second = migrate.migrate(empty_db_url)
    assert second.up_to_date
    assert migrate.plan(empty_db_url).up_to_date
    assert schema_dump(empty_db_url) == before
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select file_name, applied_at from carrierpay_meta.repeatable_sql").fetchall() == stamps


def test_plan_lists_pending_work(empty_db_url):
    todo = migrate.plan(empty_db_url)
    assert "0001" in todo.pending_revisions
    assert "procedures/010_clock.sql" in todo.changed_files


def test_concurrent_migrators_queue_on_the_lock(empty_db_url):
    errors = []

    def run():
        try:
            migrate.migrate(empty_db_url)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert migrate.plan(empty_db_url).up_to_date
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select count(*) from carrierpay_meta.alembic_version").fetchone()[0] == 1


@pytest.fixture
def broken_sql_root(tmp_path):
    root = tmp_path / "db"
    shutil.copytree(sql_root(), root)
    (root / "procedures" / "zz_broken.sql").write_text(
        "-- a deliberately broken file\n"
        "create or replace function cp.fine() returns int language sql as $$ select 1 $$;\n"
        "\n"
        "create or replace functio cp.broken() returns int language sql as $$ select 1 $$;\n"
    )
    return root


def test_broken_sql_file_names_file_and_line_and_changes_nothing(empty_db_url, broken_sql_root):
    with pytest.raises(migrate.MigrationError) as raised:
        migrate.migrate(empty_db_url, root=broken_sql_root)
    assert "procedures/zz_broken.sql:4" in str(raised.value)
    with psycopg.connect(empty_db_url) as conn:
        leftovers = conn.execute(
            "select nspname from pg_namespace where nspname in ('cp', 'api', 'carrierpay_meta')"
        ).fetchall()
    assert leftovers == []


def test_broken_file_after_a_good_migration_keeps_the_previous_state(empty_db_url, broken_sql_root):
    migrate.migrate(empty_db_url)
    before = schema_dump(empty_db_url)
    with pytest.raises(migrate.MigrationError):
        migrate.migrate(empty_db_url, root=broken_sql_root)
    assert schema_dump(empty_db_url) == before
    assert "procedures/zz_broken.sql" in migrate.plan(empty_db_url, root=broken_sql_root).changed_files


def test_0013_keeps_one_live_subscription_and_flags_queued_charges(empty_db_url):
    """A database with duplicate live subscriptions (made before the unique index) upgrades: the one
    confirmed and paid furthest stays, the others are cancelled; queued charges learn their zone."""
    migrate.migrate(empty_db_url, revision="0008")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("""
            insert into cp.regulation (code, name, source) values ('T', 'test', 'test');
            insert into cp.country (country, name, vat_bp) values ('NG', 'Nigeria', 750);
            insert into cp.carrier (code, name, country, mcc, mnc, currency, timezone, regulation_code, spec)
            values ('c', 'c', 'NG', '621', '20', 'NGN', 'Africa/Lagos', 'T', '{}');
            insert into cp.merchant (code, name, db_role, webhook_secret) values ('m', 'm', 'cp_merchant_m', 's');
            insert into cp.product (merchant_id, code, name) values (1, 'p', 'p');
            insert into cp.price_point (product_id, carrier_id, plan, amount_minor, currency, variant)
            values (1, 1, 'daily', 100, 'NGN', 'v');
            insert into cp.subscriber (msisdn, carrier_id, timezone)
            values ('+2348020000001', 1, 'Asia/Tokyo'), ('+2348020000002', 1, null);
            insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status,
                                         price_point_id, status_since, paid_through)
            values (1, 1, 1, 1, 'daily', 'pending_optin', 1, now(), null),
                   (1, 1, 1, 1, 'daily', 'active', 1, now(), '2030-01-02'),
                   (1, 1, 1, 1, 'daily', 'grace', 1, now(), '2030-01-05'),
                   (1, 2, 1, 1, 'daily', 'active', 1, now(), null);
            insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, amount_minor, currency,
                                      created_at, updated_at)
            values ('charge', 1, 1, 1, 100, 'NGN', now(), now()), ('sms', null, 2, 1, 0, 'NGN', now(), now());
            insert into cp.carrier_call (procedure_id, carrier_id, operation, safe_to_repeat, correlator, created_at)
            values (1, 1, 'charge', false, 'cp-1', now()), (2, 1, 'send_sms', true, 'cp-2', now());
            insert into cp.call_queue (call_id, carrier_id, available_at) select call_id, 1, now() from cp.carrier_call;
        """)
    migrate.migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select subscription_id, status::text, cancel_reason from cp.subscription "
                            "order by subscription_id").fetchall() == [
            (1, "cancelled", "duplicate"), (2, "cancelled", "duplicate"), (3, "grace", None), (4, "active", None)]
        assert conn.execute("select c.operation, q.charging_hours, q.timezone from cp.call_queue q "
                            "join cp.carrier_call c using (call_id) order by q.call_id").fetchall() == [
            ("charge", True, "Asia/Tokyo"), ("send_sms", False, None)]


def test_reapplying_the_sql_files_does_not_wait_for_readers_of_the_payment_tables(db_url):
    """A deploy re-applies every trigger: it must not need ACCESS EXCLUSIVE on a table, or it queues
    behind a long report and every payment then queues behind it."""
    tables = ("cp.carrier_call", "cp.call_queue", "cp.procedure", "cp.ledger_entry", "cp.journal",
              "cp.subscription", "cp.consent", "cp.merchant")
    with psycopg.connect(db_url, autocommit=True) as admin:
        triggers_before = admin.execute(
            "select tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) from pg_trigger "
            "where not tgisinternal order by 1, 2").fetchall()
        admin.execute("delete from carrierpay_meta.repeatable_sql")  # every file is applied again
        with psycopg.connect(db_url) as reader:  # a long report: ACCESS SHARE on each table until it ends
            for table in tables:
                reader.execute(f"select 1 from {table} limit 1")
            held = admin.execute(
                "select count(distinct relation) from pg_locks where mode = 'AccessShareLock' and granted "
                "and relation = any(%s::regclass[])", (list(tables),)).fetchone()[0]
            assert held == len(tables)

            done = migrate.migrate(db_url, lock_timeout="2s")

            assert len(done.changed_files) == len(migrate.repeatable_files())
            reader.rollback()
        assert migrate.plan(db_url).up_to_date
        assert admin.execute(
            "select tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) from pg_trigger "
            "where not tgisinternal order by 1, 2").fetchall() == triggers_before


def test_lock_timeout_makes_a_blocked_migration_fail_and_change_nothing(empty_db_url):
    """A revision that needs a table another transaction reads gives up instead of stalling it."""
    migrate.migrate(empty_db_url, revision="0014")  # 0015 alters cp.carrier_call
    pending = migrate.plan(empty_db_url)
    with psycopg.connect(empty_db_url) as reader:
        reader.execute("select 1 from cp.carrier_call limit 1")
        with pytest.raises(migrate.MigrationError):
            migrate.migrate(empty_db_url, lock_timeout="100ms")
        reader.rollback()
    assert migrate.plan(empty_db_url) == pending


def test_an_invalid_lock_timeout_is_refused(db_url):
    with pytest.raises(migrate.MigrationError, match="lock timeout"):
        migrate.migrate(db_url, lock_timeout="soon")


def test_a_deploy_that_changes_only_functions_does_not_wait_for_payments_in_flight(db_url):
    """Unchanged trigger files are not re-applied: (re)creating a trigger waits for every open write
    on its table and holds new ones until the deploy commits."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("update carrierpay_meta.repeatable_sql set checksum = 'changed' "
                      "where file_name like 'procedures/%'")
        with psycopg.connect(db_url) as writer:  # a payment between its first write and its commit
            writer.execute("lock table cp.carrier_call, cp.call_queue, cp.procedure, cp.ledger_entry, cp.journal, "
                           "cp.subscription in row exclusive mode")

            done = migrate.migrate(db_url, lock_timeout="2s")

            assert done.changed_files and all(name.startswith("procedures/") for name in done.changed_files)
            writer.rollback()
        assert migrate.plan(db_url).up_to_date
