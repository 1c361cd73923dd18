"""Finding and connecting to the database: a configured server, else the embedded cluster."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from carrierpay import config
from carrierpay.embedded import ClusterError, EmbeddedCluster


@dataclass
class Target:
    configured_url: str | None
    embedded: EmbeddedCluster | None  # None when an existing server was configured

    @property
    def url(self) -> str:
        if self.embedded is None:
            return self.configured_url
        return self.embedded.url(config.DATABASE_NAME)


def target(database_url: str | None = None) -> Target:
    """Where commands should connect. Starts nothing."""
    configured = config.configured_database_url(database_url)
    if configured:
        return Target(configured_url=configured, embedded=None)
    return Target(configured_url=None, embedded=EmbeddedCluster(config.home()))


def running_url(database_url: str | None = None) -> str:
    """The URL of a database that is up, or a ClusterError saying how to bring it up."""
    where = target(database_url)
    if where.embedded is not None and not where.embedded.status().running:
        raise ClusterError("the embedded PostgreSQL is not running", hint="run: carrierpay db up")
    return where.url


def connect(url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(url, **kwargs)


def redact_url(url: str) -> str:
    """A database URL fit to print or store: the password replaced by ***."""
    from sqlalchemy.engine import make_url  # imported late: slow, and most commands never print a URL

    return make_url(url).render_as_string(hide_password=True)
