"""The front routes the SQL API to the shard that owns the subscriber or the id, keeps the shards'
error codes, and merges reports over every shard."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.shards import ShardError
from carrierpay.shards.front import MERGED_ON_THE_FRONT, NOT_THROUGH_THE_FRONT, route_for
from tests.shards.conftest import login_url, merchant, msisdn_on, shard_holds


@pytest.fixture(scope="module")
def shop(sharded):
    return merchant(sharded, "routing_shop")


@pytest.fixture
def api(sharded, shop):
    with psycopg.connect(login_url(sharded, shop), autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("partition", [0, 1])
def test_a_charge_lands_on_the_subscribers_shard_and_its_id_names_it(sharded, api, partition):
    number = msisdn_on(sharded, partition, start=100)
    charge = api.execute("select api.charge('routing_shop', %s, 'gems', %s)",
                         [number, f"land-{partition}"]).fetchone()[0]
    assert charge["id"] >> PARTITION_ID_BITS == partition
    assert shard_holds(sharded, partition, "procedure", "procedure_id", charge["id"])
    assert not shard_holds(sharded, 1 - partition, "procedure", "procedure_id", charge["id"])
    assert shard_holds(sharded, partition, "subscriber", "msisdn", number)
    assert not shard_holds(sharded, 1 - partition, "subscriber", "msisdn", number)
    # The id routes back to the shard that issued it.
    payment = api.execute("select api.payment('routing_shop', %s)", [charge["id"]]).fetchone()[0]
    assert (payment["id"], payment["msisdn"], payment["status"]) == (charge["id"], number, "pending")


def test_every_spelling_of_a_number_lands_on_one_shard(sharded, api):
    number = msisdn_on(sharded, 1, start=200)
    spellings = [number, "00" + number[1:], f"{number[:3]} {number[3:7]} {number[7:]}", f"{number[:3]}-({number[3:]})"]
    ids = [api.execute("select api.check_balance('routing_shop', %s, 100, %s)", [spelling, f"spell-{i}"])
           .fetchone()[0]["id"] for i, spelling in enumerate(spellings)]
    assert {i >> PARTITION_ID_BITS for i in ids} == {1}
    with psycopg.connect(sharded.shard_urls[1]) as conn:
        assert conn.execute("select count(*) from cp.subscriber where msisdn = %s", [number]).fetchone()[0] == 1


def test_a_repeated_key_returns_the_first_answer_through_the_front(sharded, api):
    number = msisdn_on(sharded, 0, start=300)
    first = api.execute("select api.charge('routing_shop', %s, 'gems', 'same-key')", [number]).fetchone()[0]
    again = api.execute("select api.charge('routing_shop', %s, 'gems', 'same-key')", [number]).fetchone()[0]
    assert first == again
    with psycopg.connect(sharded.shard_urls[0]) as conn:
        assert conn.execute("select count(*) from cp.procedure p join cp.subscriber s using (subscriber_id) "
                            "where s.msisdn = %s", [number]).fetchone()[0] == 1


def test_the_shards_error_codes_reach_the_caller(sharded, api):
    with pytest.raises(psycopg.Error) as malformed:
        api.execute("select api.charge('routing_shop', '+44 77 00', 'gems', 'bad-number')")
    assert malformed.value.sqlstate == "CP005"
    with pytest.raises(psycopg.Error) as unknown_product:
        api.execute("select api.charge('routing_shop', %s, 'nope', 'bad-product')", [msisdn_on(sharded, 1, 400)])
    assert unknown_product.value.sqlstate == "CP003"
    # An id of partition 0 that the shard never issued, and one of a partition the cluster does not have.
    with pytest.raises(psycopg.Error) as missing:
        api.execute("select api.payment('routing_shop', 999999)")
    assert missing.value.sqlstate == "CP040"
    with pytest.raises(psycopg.Error) as no_partition:
        api.execute("select api.payment('routing_shop', %s)", [5 << PARTITION_ID_BITS])
    assert no_partition.value.sqlstate == "CP160"


def test_subscriptions_and_opt_ins_route_by_their_ids(sharded, api):
    number = msisdn_on(sharded, 1, start=500)
    sharded.admin("add_price_point", p_merchant="routing_shop", p_product="gems", p_plan="weekly",
                  p_amount_minor=150, p_currency="GBP", p_variant="gems_week", p_carrier="shard_gb")
    subscription = api.execute("select api.subscribe('routing_shop', %s, 'gems', 'weekly', 'sub-1')",
                               [number]).fetchone()[0]
    assert subscription["id"] >> PARTITION_ID_BITS == 1
    assert shard_holds(sharded, 1, "subscription", "subscription_id", subscription["id"])
    found = api.execute("select api.subscription('routing_shop', %s)", [subscription["id"]]).fetchone()[0]
    assert found["id"] == subscription["id"]
    cancelled = api.execute("select api.cancel_subscription('routing_shop', %s, 'test')",
                            [subscription["id"]]).fetchone()[0]
    assert cancelled["status"] == "cancelled"
    optin = api.execute("select api.request_optin('routing_shop', %s, 'gems', 'optin-1')", [number]).fetchone()[0]
    assert optin["id"] >> PARTITION_ID_BITS == 1
    # A wrong PIN is checked by the shard that holds the opt-in, found by its id alone.
    with pytest.raises(psycopg.Error) as wrong_pin:
        api.execute("select api.confirm_optin('routing_shop', %s, '0000000')", [optin["id"]])
    assert wrong_pin.value.sqlstate.startswith("CP")
    assert wrong_pin.value.sqlstate not in ("CP040", "CP050", "CP160")


def test_reports_merge_every_shards_rows(sharded, api):
    for partition in (0, 1):
        api.execute("select api.charge('routing_shop', %s, 'gems', %s)", [msisdn_on(sharded, partition, 600),
                                                                         f"report-{partition}"])
    # Revenue is read from the hourly rollups: settle the charges on each shard and fold them.
    for url in sharded.shard_urls:
        with psycopg.connect(url, autocommit=True) as shard:
            calls = [doc for (doc,) in shard.execute(
                "select adapter.claim_calls('shard_gb', 100, interval '1 minute', 'report-test')")]
            shard.execute("select adapter.complete_calls(%s)", [Jsonb([
                {"call_id": doc["call_id"], "lease": doc["lease"], "outcome": "succeeded",
                 "carrier_ref": f"R{doc['call_id']}"} for doc in calls])])
            shard.execute("select sched.fold_rollups()")
    query = ("select coalesce(sum(payments), 0)::bigint, count(*) from report.revenue "
             "where merchant = 'routing_shop'")
    with psycopg.connect(sharded.front_url) as front:
        merged = front.execute(query).fetchone()
        ledger_accounts = front.execute("select count(*) from report.ledger_balances").fetchone()[0]
    per_shard = []
    for url in sharded.shard_urls:
        with psycopg.connect(url) as shard:
            per_shard.append(shard.execute(query).fetchone())
    # One revenue row per carrier/merchant/currency, counted over both shards.
    assert merged == (sum(row[0] for row in per_shard), 1) and merged[0] >= 2
    assert all(row[1] == 1 for row in per_shard)
    assert ledger_accounts >= 0


def _newest_first(items: list[dict], date_key: str, id_key: str) -> list[dict]:
    return sorted(items, key=lambda item: (item[date_key], int(item[id_key])), reverse=True)


def test_a_page_of_every_partitions_payments_is_cut_from_their_merge(sharded):
    document = merchant(sharded, "list_shop")
    numbers = list(dict.fromkeys(msisdn_on(sharded, k % 2, start=500 + 10 * k) for k in range(6)))
    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        ids = {api.execute("select api.charge('list_shop', %s, 'gems', %s)", [number, f"list-{number}"])
               .fetchone()[0]["id"] for number in numbers}
        everything = api.execute("select api.list_payments('list_shop', p_per_page => 100)").fetchone()[0]
        pages = [api.execute("select api.list_payments('list_shop', p_page => %s, p_per_page => 4)", [page])
                 .fetchone()[0] for page in (1, 2)]
        oldest = api.execute("select api.list_payments('list_shop', p_order => 'asc', p_per_page => 4)").fetchone()[0]
        with pytest.raises(psycopg.Error) as refused:
            api.execute("select api.list_payments('list_shop', p_per_page => 101)")
    assert len(numbers) == 6
    assert {int(item["paymentId"]) >> PARTITION_ID_BITS for item in everything["payments"]} == {0, 1}
    assert {int(item["paymentId"]) for item in everything["payments"]} == ids
    assert everything["payments"] == _newest_first(everything["payments"], "paymentCreationDate", "paymentId")
    assert [page["total"] for page in pages] == [6, 6] and everything["total"] == 6
    assert pages[0]["payments"] + pages[1]["payments"] == everything["payments"]
    assert [page["last_index"] for page in pages] == [4, 6]
    assert oldest["payments"] == everything["payments"][::-1][:4]
    assert refused.value.sqlstate == "CP120"


def test_a_page_of_every_partitions_subscriptions_is_cut_from_their_merge(sharded):
    document = merchant(sharded, "list_club")
    sharded.admin("add_price_point", p_merchant="list_club", p_product="gems", p_plan="daily", p_amount_minor=300,
                  p_currency="GBP", p_variant="gems_day", p_carrier="shard_gb")
    numbers = list(dict.fromkeys(msisdn_on(sharded, k % 2, start=600 + 10 * k) for k in range(3)))
    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        ids = {api.execute("select api.subscribe('list_club', %s, 'gems', 'daily', %s)", [number, f"sub-{number}"])
               .fetchone()[0]["id"] for number in numbers}
        pages = [api.execute("select api.list_subscriptions('list_club', p_page => %s, p_per_page => 2)", [page])
                 .fetchone()[0] for page in (1, 2)]
    items = pages[0]["items"] + pages[1]["items"]
    assert [page["total"] for page in pages] == [3, 3]
    assert {int(item["subscriptionId"]) for item in items} == ids
    assert {int(item["subscriptionId"]) >> PARTITION_ID_BITS for item in items} == {0, 1}
    assert items == _newest_first(items, "creationDate", "subscriptionId")


def test_every_api_function_has_a_front_twin_with_its_signature(sharded):
    query = ("select p.proname || '(' || pg_catalog.pg_get_function_arguments(p.oid) || ') '"
             " || pg_catalog.pg_get_function_result(p.oid) from pg_catalog.pg_proc p"
             " join pg_catalog.pg_namespace n on n.oid = p.pronamespace where n.nspname = 'api' order by 1")
    with psycopg.connect(sharded.shard_urls[0]) as shard, psycopg.connect(sharded.front_url) as front:
        on_shard = [row[0] for row in shard.execute(query)]
        on_front = [row[0] for row in front.execute(query)]
        proxies = front.execute(
            "select count(*) filter (where l.lanname = 'plproxy'), count(*) from pg_catalog.pg_proc p "
            "join pg_catalog.pg_namespace n on n.oid = p.pronamespace "
            "join pg_catalog.pg_language l on l.oid = p.prolang "
            "where n.nspname = 'front' and p.proname like 'proxy%%'").fetchone()
    exposed = [signature for signature in on_shard if signature.split("(")[0] not in NOT_THROUGH_THE_FRONT]
    assert len(exposed) >= 9 and len(exposed) == len(on_shard) - len(NOT_THROUGH_THE_FRONT)
    assert on_front == exposed  # the merged lists too: db/front/lists.sql keeps the shard's signatures
    routed = len(exposed) - len(MERGED_ON_THE_FRONT)
    assert proxies == (routed, routed)


def test_each_call_through_the_front_commits_on_its_partition_whatever_the_merchants_transaction(sharded, api):
    number = msisdn_on(sharded, 1, start=400)
    # On a single node a merchant's rollback takes its charge back; through the front the partition
    # committed the call when it answered (docs/scaling.md, "What the front does not do").
    with api.transaction(force_rollback=True):
        first = api.execute("select api.charge('routing_shop', %s, 'gems', 'rolled-back')", [number]).fetchone()[0]
    assert shard_holds(sharded, 1, "procedure", "procedure_id", first["id"])
    again = api.execute("select api.charge('routing_shop', %s, 'gems', 'rolled-back')", [number]).fetchone()[0]
    assert again == first


def test_the_map_keeps_its_partition_count(sharded):
    number = msisdn_on(sharded, 1, start=300)
    with psycopg.connect(sharded.front_url) as conn:
        places = [connstr for _, connstr in conn.execute("select * from front.list_partitions()")]
        # Four partitions would mask the hash with 3: this subscriber's calls would go where its rows are not.
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select front.set_cluster(%s)", [places + places])
        assert refused.value.sqlstate == "CP161"
    with psycopg.connect(sharded.front_url) as conn:
        assert [connstr for _, connstr in conn.execute("select * from front.list_partitions()")] == places
        assert conn.execute("select front.msisdn_hash(%s) & (front.partition_count() - 1)",
                            [number]).fetchone()[0] == 1
        # The same count pointing at the same (or a moved) place is how a partition moves.
        assert conn.execute("select front.set_cluster(%s)", [places]).fetchone()[0] == 2


def test_a_function_the_front_cannot_route_stops_the_generation():
    assert route_for("charge", ["p_merchant", "p_msisdn", "p_product"]) == "front.route_msisdn(p_merchant, p_msisdn)"
    assert route_for("capture", ["p_merchant", "p_reservation_id"]) == "front.route_id(p_merchant, p_reservation_id)"
    assert route_for("read_payment", ["p_merchant", "p_payment_id"], ["text", "text"]) == (
        "front.route_text_id(p_merchant, p_payment_id)")
    assert route_for("create_payment", ["p_merchant", "p_request", "p_default_product"]) == (
        "front.route_request(p_merchant, p_request)")
    with pytest.raises(ShardError, match="api.list_things"):
        route_for("list_things", ["p_merchant", "p_since"])
    with pytest.raises(ShardError, match="p_merchant"):
        route_for("charge", ["p_msisdn", "p_merchant"])
