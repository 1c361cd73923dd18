"""A merchant's own database role, used as an attacker would: it must act for its merchant only."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors

from tests.security.conftest import raises_sqlstate, url_as

pytestmark = pytest.mark.sql_api


def charge(conn: psycopg.Connection, merchant: str, key: str) -> dict:
    return conn.execute("select api.charge(%s, '+2348020000007', %s, %s)",
                        [merchant, "coins" if merchant == "other" else "gems", key]).fetchone()[0]


def test_a_merchant_role_can_create_no_temporary_table(attacker):
    with attacker.connect() as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("create temp table pg_roles (rolname name, rolsuper bool)")


def test_a_shadow_pg_roles_does_not_make_a_merchant_superuser(db_url, owner, attacker):
    # Even where an operator has handed out TEMP, the caller's temporary objects never reach the API:
    # every SECURITY DEFINER function searches pg_temp last and names catalogs with their schema.
    database = owner.execute("select current_database()").fetchone()[0]
    owner.execute(f'grant temporary on database "{database}" to {attacker.role}')
    with attacker.connect() as conn:
        conn.execute("create temp table pg_roles (rolname name, rolsuper bool)")
        conn.execute("insert into pg_roles values (session_user, true)")
        conn.execute("create temp table pg_namespace (nspname name, nspowner oid)")
        conn.execute("insert into pg_namespace select 'cp', oid from pg_catalog.pg_roles where rolname = session_user")
        assert charge(conn, attacker.code, "own-1")["status"] == "pending"
        for attempt in ("select api.charge('other', '+2348020000007', 'coins', 'x-1')",
                        "select api.payment('other', 1)",
                        "select api.refund('other', 1, 'x-2')"):
            with raises_sqlstate("CP002"):
                conn.execute(attempt)
    owned = owner.execute("select count(*) from cp.procedure p join cp.merchant m using (merchant_id) "
                               "where m.code = 'other'").fetchone()[0]
    assert owned == 0


def test_a_pooled_login_acts_only_for_the_role_it_set(db_url, owner, attacker):
    pool_role = f"pool_{uuid.uuid4().hex[:8]}"
    owner.execute(f"create role {pool_role} login password 'pool-pass' in role {attacker.role}, cp_merchant_other")
    with psycopg.connect(url_as(db_url, pool_role, "pool-pass"), autocommit=True) as conn:
        # Logged in as the pool itself, it is neither merchant.
        for code in (attacker.code, "other"):
            with raises_sqlstate("CP002"):
                charge(conn, code, f"pool-{code}")
        conn.execute(f"set role {attacker.role}")
        assert charge(conn, attacker.code, "pooled-1")["status"] == "pending"
        with raises_sqlstate("CP002"):
            charge(conn, "other", "pooled-2")
        conn.execute("set role cp_merchant_other")
        assert charge(conn, "other", "pooled-3")["status"] == "pending"
        with raises_sqlstate("CP002"):
            charge(conn, attacker.code, "pooled-4")


def test_every_security_definer_function_pins_its_search_path_with_pg_temp_last(conn):
    rows = conn.execute(
        """
        select p.oid::regprocedure::text, p.proconfig
        from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where p.prosecdef and n.nspname in ('cp', 'api', 'admin', 'adapter', 'report', 'sched')
        """
    ).fetchall()
    assert len(rows) > 30, "expected the API's SECURITY DEFINER functions"
    unpinned = []
    for signature, config in rows:
        path = next((c.split("=", 1)[1] for c in (config or []) if c.startswith("search_path=")), None)
        schemas = [s.strip() for s in path.split(",")] if path else []
        if not schemas or schemas[0] != "pg_catalog" or schemas[-1] != "pg_temp":
            unpinned.append(f"{signature}: {path}")
    assert unpinned == []


def test_the_merchant_role_is_not_adopted_when_someone_else_made_it(conn):
    code = f"m{uuid.uuid4().hex[:10]}"
    conn.execute(f"create role cp_merchant_{code} login password 'chosen-by-the-attacker'")
    with raises_sqlstate("CP085"):
        conn.execute("select admin.add_merchant(%s, 'Squatted')", [code])
    assert conn.execute("select count(*) from cp.merchant where code = %s", [code]).fetchone()[0] == 0
    member = conn.execute("select pg_catalog.pg_has_role(%s, 'carrierpay_merchant', 'member')",
                          [f"cp_merchant_{code}"]).fetchone()[0]
    assert member is False


def test_a_merchant_logs_in_with_the_password_shown_once_and_rotation_retires_it(db_url, owner, attacker):
    with attacker.connect() as conn:
        assert conn.execute("select current_user").fetchone()[0] == attacker.role
    stored = owner.execute("select rolpassword from pg_catalog.pg_authid where rolname = %s",
                                [attacker.role]).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and attacker.password not in stored
    rotated = owner.execute("select admin.rotate_merchant_password(%s)", [attacker.code]).fetchone()[0]
    assert rotated["db_password"] != attacker.password
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        attacker.connect()
    with psycopg.connect(url_as(db_url, attacker.role, rotated["db_password"]), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == attacker.role


def test_the_embedded_cluster_wants_a_password_over_tcp(pg_cluster):
    assert pg_cluster.password
    bare = f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(bare, connect_timeout=5, passfile="/dev/null")


def test_a_merchant_sets_preferences_only_of_its_own_customers(owner, attacker):
    """A subscriber's zone and language steer every merchant's texts and renewals: a merchant the subscriber
    never dealt with may not change them, nor probe which numbers are someone else's customers."""
    owner.execute("select api.charge('other', '+2348020000031', 'coins', 'theirs-1')")
    with attacker.connect() as conn:
        for number in ("+2348020000031", "+2348020000032"):  # another merchant's customer; nobody's
            with raises_sqlstate("CP143"):
                conn.execute("select api.set_subscriber_preferences(%s, %s, 'Asia/Tokyo', 'ja')",
                             [attacker.code, number])
            with raises_sqlstate("CP002"):
                conn.execute("select api.set_subscriber_preferences('other', %s, 'Asia/Tokyo', 'ja')", [number])
        assert charge(conn, attacker.code, "own-2")["status"] == "pending"  # +2348020000007: now its customer
        assert conn.execute("select api.set_subscriber_preferences(%s, '+2348020000007', 'Asia/Tokyo')",
                            [attacker.code]).fetchone()[0]["timezone"] == "Asia/Tokyo"
    assert owner.execute("select timezone, language from cp.subscriber where msisdn = '+2348020000031'").fetchone() \
        == (None, None)
