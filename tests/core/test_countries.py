"""Every ISO 3166-1 country ships with its currency and time zone, and a carrier onboards in any of them."""

from __future__ import annotations

import datetime

import pycountry
from babel.numbers import get_territory_currencies

from carrierpay.countries import zones_by_country


def test_every_iso_country_is_shipped_with_its_currency_and_a_zone_of_its_own(conn):
    rows = {code: (currency, zone) for code, currency, zone in
            conn.execute("select country, currency, timezone from cp.country").fetchall()}
    assert set(rows) >= {country.alpha_2 for country in pycountry.countries}
    zones = zones_by_country()
    known_zones = {row[0] for row in conn.execute("select name from pg_catalog.pg_timezone_names").fetchall()}
    for code, (currency, zone) in rows.items():
        tender = get_territory_currencies(code, datetime.date.today(), tender=True)
        if tender:
            assert currency in tender, code
        if zone is not None:
            assert zone in zones.get(code, []) and zone in known_zones, (code, zone)


def test_a_carrier_in_a_country_we_never_configured_by_hand_onboards(conn):
    onboarded = conn.execute("""
        select admin.onboard_carrier('{"code": "movi_es", "name": "Movil ES", "country": "ES", "mcc": "214",
          "mnc": "07", "currency": "EUR", "timezone": "Europe/Madrid", "number_ranges": ["+34600"],
          "regulation": "DEFAULT", "terms": {"carrier_share_bp": 3000}, "throughput": {"tps": 10},
          "operations": {"charge": {"pattern": "sync"}}}')""").fetchone()[0]
    assert onboarded["status"] == "onboarded"
    assert conn.execute("select currency, timezone from cp.country where country = 'ES'").fetchone() == \
        ("EUR", "Europe/Madrid")


def test_a_migrate_keeps_the_vat_an_operator_set(db_url, conn):
    from carrierpay import migrate

    conn.execute("update cp.country set vat_bp = 2100 where country = 'ES'")
    conn.execute("update carrierpay_meta.repeatable_sql set checksum = 'stale' "
                 "where file_name = 'procedures/050_countries.sql'")
    migrate.migrate(db_url)
    assert conn.execute("select vat_bp from cp.country where country = 'ES'").fetchone()[0] == 2100
