"""A leaner payment path: what one payment writes, cut to what the guarantees need.

- Foreign keys whose child is a high-volume table (procedures, carrier calls, the call queue,
  idempotency keys, journals, ledger entries, entitlements, notifications, carrier logs, and
  subscribers' carrier) are dropped. Each check took a share lock on the parent row, a WAL record
  and, with concurrent payments of one merchant, a MultiXact: a third of a payment's records. The
  parents are never deleted instead (trigger `_050_never_deleted`, CP150), children are written
  only by the procedures that read their parents in the same transaction, and
  `report.dangling_references` lists any row whose parent is missing (the benchmark's money checks
  and the test suite require it empty).
- Status changes become HOT updates (no index entry per update): procedures and carrier calls
  leave room on each page (fillfactor), and no index depends on a column a state change writes.
  The one-charge-per-period guarantee moves from a predicate on status to `holds_period`, cleared
  only when a charge fails; the reconciliation and receipt-wait indexes key on the columns that are
  set only while a call waits; the ids a callback names a call by get a column of their own (`message_ids`), so a
  charge's carrier reference is no longer indexed.
- A carrier's throughput budget is split in slots: claims by concurrent adapters no longer queue
  on one row for the length of their transactions.
- Fewer index entries per payment: the outboxes' time indexes (`cp.event.recorded_at`,
  `cp.carrier_log.logged_at`) go, as they are read oldest first by id; ledger entries are keyed by (journal_id, entry_id)
  and no longer indexed by account (balances are sums over all entries); carrier calls' events are
  left out of the by-aggregate index (a payment's history reads its procedure's); a correlator is
  'cp-' and its call's id (checked), so its own unique index goes.

"""

from alembic import op

from carrierpay.revisions import downgrade

revision = "0016"
down_revision = "0015"

# (table, constraint): foreign keys on the payment path.
DROPPED_FOREIGN_KEYS = [
    ("procedure", "procedure_carrier_id_fkey"), ("procedure", "procedure_merchant_id_fkey"),
    ("procedure", "procedure_parent_id_fkey"), ("procedure", "procedure_price_point_id_fkey"),
    ("procedure", "procedure_product_id_fkey"), ("procedure", "procedure_subscriber_id_fkey"),
    ("procedure", "procedure_subscription_id_fkey"),
    ("carrier_call", "carrier_call_carrier_id_fkey"), ("carrier_call", "carrier_call_procedure_id_fkey"),
    ("call_queue", "call_queue_call_id_fkey"), ("call_queue", "call_queue_carrier_id_fkey"),
    ("idempotency", "idempotency_merchant_id_fkey"),
    ("journal", "journal_procedure_id_fkey"),
    ("ledger_entry", "ledger_entry_account_id_fkey"), ("ledger_entry", "ledger_entry_journal_id_fkey"),
    ("entitlement", "entitlement_merchant_id_fkey"), ("entitlement", "entitlement_procedure_id_fkey"),
    ("entitlement", "entitlement_product_id_fkey"), ("entitlement", "entitlement_subscriber_id_fkey"),
    ("merchant_notification", "merchant_notification_merchant_id_fkey"),
    ("merchant_notification", "merchant_notification_procedure_id_fkey"),
    ("merchant_notification", "merchant_notification_subscription_id_fkey"),
    ("carrier_log", "carrier_log_call_id_fkey"),
    ("subscriber", "subscriber_carrier_id_fkey"),
]


def upgrade() -> None:
    for table, constraint in DROPPED_FOREIGN_KEYS:
        op.execute(f"alter table cp.{table} drop constraint if exists {constraint}")
    # A status change is logged from the first changed byte of the row to the last: the columns that
    # never change after insert (a call's parameters and correlator, a procedure's metadata) move
    # behind those that do, so an update logs the status and its companions, not the whole row.
    # Moving a column is adding it at the end, copying and dropping the old one (views that name it
    # are dropped with it and made again by migrate's repeatable files).
    op.execute(
        """
        drop index cp.procedure_one_charge_per_period;
        alter table cp.carrier_call disable trigger user;
        alter table cp.carrier_call rename column params to params_moved;
        alter table cp.carrier_call rename column correlator to correlator_moved;
        alter table cp.carrier_call add column correlator text, add column params jsonb;
        update cp.carrier_call set correlator = correlator_moved, params = params_moved;
        alter table cp.carrier_call drop column params_moved cascade, drop column correlator_moved cascade;
        alter table cp.carrier_call alter column correlator set not null,
            alter column params set default '{}', alter column params set not null;
        alter table cp.carrier_call enable trigger user;

        alter table cp.procedure disable trigger user;
        alter table cp.procedure rename column metadata to metadata_moved;
        alter table cp.procedure add column metadata jsonb;
        update cp.procedure set metadata = metadata_moved;
        alter table cp.procedure drop column metadata_moved cascade;
        alter table cp.procedure alter column metadata set default '{}', alter column metadata set not null;
        alter table cp.procedure enable trigger user;
        """
    )
    op.execute(
        """
        alter table cp.procedure set (fillfactor = 60);
        alter table cp.carrier_call set (fillfactor = 60);

        alter table cp.procedure add column holds_period boolean;
        comment on column cp.procedure.holds_period is
            'True while this charge may take its subscription period (every status but failed): one per '
            'period (procedure_holds_period). Set at creation, cleared when the charge fails.';
        update cp.procedure set holds_period = true
        where kind = 'charge' and subscription_id is not null and status <> 'failed'
          and (metadata->>'partial') is null;
        create unique index procedure_holds_period on cp.procedure (subscription_id, period_index)
            where holds_period;

        drop index cp.carrier_call_to_reconcile;
        create index carrier_call_to_reconcile on cp.carrier_call (carrier_id, next_reconcile_at)
            where next_reconcile_at is not null;
        update cp.carrier_call set awaiting_since = null
        where status <> 'awaiting_result' and awaiting_since is not null;
        drop index cp.carrier_call_awaiting;
        create index carrier_call_awaiting on cp.carrier_call (carrier_id, awaiting_since)
            where awaiting_since is not null;
        comment on column cp.carrier_call.awaiting_since is
            'When the call started waiting for its receipt; null once it no longer waits';

        alter table cp.carrier_call add column message_ids text[];
        comment on column cp.carrier_call.message_ids is
            'The ids a callback may name this call by (an SMSC''s message id per part), for a call answered '
            'by callback; set from carrier_ref by a trigger';
        update cp.carrier_call set message_ids = string_to_array(carrier_ref, ',')
        where pattern = 'callback' and carrier_ref is not null;
        drop index cp.carrier_call_carrier_ref;
        create index carrier_call_message_ids on cp.carrier_call using gin (message_ids)
            where message_ids is not null;

        -- outboxes are read oldest first by id; nothing looks them up by time
        drop index cp.event_recorded_at;
        drop index cp.carrier_log_logged_at;

        alter table cp.ledger_entry drop constraint ledger_entry_pkey;
        alter table cp.ledger_entry add primary key (journal_id, entry_id);
        drop index cp.ledger_entry_journal_id_idx;
        -- balances are sums over all entries (report.ledger_balances): no query looks entries up by account
        drop index cp.ledger_entry_account_id_idx;

        -- a payment's history reads its procedure's events; a call's are read only by the history shipper
        drop index cp.event_aggregate_type_aggregate_id_event_id_idx;
        create index event_aggregate on cp.event (aggregate_type, aggregate_id, event_id)
            where aggregate_type <> 'carrier_call';

        -- a carrier's per-second budget in slots, so concurrent claims take from different rows
        alter table cp.carrier_budget add column slot smallint not null default 0;
        alter table cp.carrier_budget drop constraint carrier_budget_pkey;
        alter table cp.carrier_budget add primary key (carrier_id, slot);
        comment on table cp.carrier_budget is
            'Calls per second granted to a carrier, split in slots (cp.take_budget): concurrent claims lock '
            'different rows';

        -- a correlator is its call's id: the primary key makes it unique, and callbacks find calls by it
        alter table cp.carrier_call add constraint carrier_call_correlator_is_id check (correlator = 'cp-' || call_id);
        """
    )
