"""Fixtures for the attacks: a merchant world, and connections that log in as a merchant's own role."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg.sql
import pytest


def url_as(url: str, role: str, password: str) -> str:
    """The same database, logged in as another role with its password."""
    parts = urlsplit(url)
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def merchant(request, api_target):
    """A connection logged in as the world's merchant acme, with its own role."""
    if api_target == "front":
        from tests.front_kit import ThroughFront

        world = request.getfixturevalue("front_world")
        with ThroughFront(psycopg.connect(world.api_front.login_url("acme"), autocommit=True), world) as conn:
            yield conn
        return
    world_url = request.getfixturevalue("world_url")
    with psycopg.connect(role_url(world_url, "cp_merchant_acme"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def attacker(request, api_target, owner):
    """A merchant of its own (unique code: roles are cluster-wide), with a product priced on test_ng,
    and a factory of connections logged in as its role with the password add_merchant showed once
    (through the front: its login there)."""
    code = f"m{uuid.uuid4().hex[:10]}"
    added = owner.execute("select admin.add_merchant(%s, 'Attacker Ltd')", [code]).fetchone()[0]
    owner.execute("select admin.add_product(%s, 'gems', 'Gems')", [code])
    owner.execute("select admin.add_price_point(%s, 'gems', 'one_time', 20000, 'NGN', 'gems', "
                  "p_carrier => 'test_ng')", [code])
    if api_target == "front":
        from tests.front_kit import ThroughFront

        world = request.getfixturevalue("front_world")
        url = world.api_front.login_url(code)
        password = world.api_front.passwords[code]
    else:
        world_url = request.getfixturevalue("world_url")
        url, password = url_as(world_url, added["db_role"], added["db_password"]), added["db_password"]

    class Merchant:
        def __init__(self):
            self.code = code
            self.role = added["db_role"]
            self.password = password

        def connect(self, **kwargs) -> psycopg.Connection:
            conn = psycopg.connect(url, autocommit=True, **kwargs)
            return ThroughFront(conn, world) if api_target == "front" else conn

    return Merchant()


class raises_sqlstate:  # noqa: N801 - used like pytest.raises
    """`with raises_sqlstate("CP002"): ...` fails unless the block raises a database error with that SQLSTATE."""

    def __init__(self, code: str):
        self.code = code

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            raise AssertionError(f"expected SQLSTATE {self.code}, nothing was raised")
        if not isinstance(exc, psycopg.Error) or exc.sqlstate != self.code:
            return False
        return True


def role_url(owner_url: str, role: str) -> str:
    """A URL that logs in as `role`, after giving it a fresh password (the cluster wants SCRAM for everyone)."""
    import secrets

    password = secrets.token_urlsafe(16)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("alter role {} with login password {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))
    return url_as(owner_url, role, password)
