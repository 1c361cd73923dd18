"""The ledger fold: account balances and the journal check folded past a journal-id watermark, so the
ledger reports read a few rows plus the journals posted since the last fold instead of every entry.

`cp.ledger_fold` holds the watermark (journals checked through), `cp.ledger_fold_balance` each
account's balance through it, `cp.ledger_unbalanced` the journals a fold found unbalanced (must stay
empty), and `cp.ledger_straggler` the journal ids the watermark passed before they were visible (a
transaction still open, or rolled back) with the transactions that might still post them; each is
folded once when it appears, or forgotten once none of those transactions is left. sched.fold_ledger
advances it; no payment transaction writes any of these tables. Existing databases start at 0 and
are folded by the scheduler's first ticks.

"""

from carrierpay.revisions import downgrade, executes

revision = "0025"
down_revision = "0024"

upgrade = executes(
    """
        create table cp.ledger_fold (
            singleton       boolean primary key default true check (singleton),
            checked_through bigint not null default 0,
            folded_at       timestamptz,
            journals        bigint not null default 0
        );
        comment on table cp.ledger_fold is
            'How far sched.fold_ledger has come: every visible journal up to checked_through (but the ids in '
            'cp.ledger_straggler) is summed into cp.ledger_fold_balance and was checked for balance';
        insert into cp.ledger_fold (singleton) values (true);

        create table cp.ledger_fold_balance (
            account_id      integer primary key,
            balance_minor   bigint not null,
            entries         bigint not null
        );
        comment on table cp.ledger_fold_balance is
            'Balance (debit positive) and number of entries per ledger account over the journals folded so far';

        create table cp.ledger_unbalanced (
            journal_id      bigint primary key,
            off_by_minor    bigint not null,
            found_at        timestamptz not null
        );
        comment on table cp.ledger_unbalanced is
            'Journals sched.fold_ledger found not summing to zero when it folded them: must stay empty';

        create table cp.ledger_straggler (
            journal_id      bigint primary key,
            since           timestamptz not null,
            lockers         text[] not null
        );
        comment on table cp.ledger_straggler is
            'Journal ids below the fold watermark not visible when it passed them, and the transactions '
            '(pg_locks virtualtransaction) then able to insert journals: folded when visible, forgotten '
            'once none of them is left';
        """
)
