"""The embedded cluster refuses to touch data it does not understand, and copes with busy ports."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from carrierpay.embedded import ClusterError, EmbeddedCluster


@pytest.fixture
def home():
    path = Path(tempfile.mkdtemp(prefix="carrierpay-embedded-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    cluster = EmbeddedCluster(path)
    if cluster.is_initialized() and cluster.status().running:
        cluster.stop()
    shutil.rmtree(path, ignore_errors=True)  # a cluster's files: tens of megabytes a test


@pytest.mark.parametrize(("files", "refused_by", "message"), [
    ({"PG_VERSION": "14\n", "precious": "keep me"}, ("init", "start"), "PostgreSQL 14 cluster"),
    ({"PG_VERSION": "15\n"}, ("start",), "damaged"),
    ({"notes.txt": "not a cluster"}, ("init",), "holds no PostgreSQL cluster"),
], ids=["another version", "damaged", "foreign files"])
def test_a_datadir_it_does_not_understand_is_refused_and_kept(home, files, refused_by, message):
    datadir = home / "pgdata"
    datadir.mkdir()
    for name, text in files.items():
        (datadir / name).write_text(text)
    for action in refused_by:
        with pytest.raises(ClusterError, match=message):
            getattr(EmbeddedCluster(home), action)()
    assert {name: (datadir / name).read_text() for name in files} == files


def _cluster_with_its_preferred_port_held(home):
    """A cluster whose preferred port this test holds, so that the cluster must find another.

    The preferred port derives from the data directory's path and lies in the kernel's ephemeral
    range, where another process's outgoing connection may already hold it: try further
    directories until one's preferred port is ours to hold."""
    for attempt in range(50):
        cluster_home = home / f"cluster-{attempt}"
        cluster_home.mkdir(mode=0o755)
        cluster = EmbeddedCluster(cluster_home, fast=True)
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", cluster._preferred_port()))
        except OSError:
            blocker.close()
            continue
        blocker.listen()
        return cluster, blocker
    raise AssertionError("50 data directories in a row had their preferred port taken")


def test_busy_port_is_skipped_and_second_start_reports_running(home):
    cluster, blocker = _cluster_with_its_preferred_port_held(home)
    cluster.init()
    preferred = cluster._preferred_port()
    try:
        assert cluster.start() is True
        assert cluster.port != preferred
        assert cluster.start() is False
        assert cluster.status().running
    finally:
        blocker.close()
        assert cluster.stop() is True
    assert cluster.stop() is False
    assert not cluster.status().running


def test_a_server_whose_binaries_were_upgraded_under_it_gets_its_fix_in_one_line():
    from carrierpay.embedded import hint_for_server_error

    upgraded = ('could not load library "/usr/lib/postgresql/15/lib/plpgsql.so": '
                "/usr/lib/postgresql/15/lib/plpgsql.so: undefined symbol: EnsurePortalSnapshotExists")
    assert hint_for_server_error(upgraded) == ("the PostgreSQL binaries were upgraded under the running server; "
                                               "restart it: carrierpay db down && carrierpay db up")
    assert hint_for_server_error('relation "cp.procedure" does not exist') is None
