"""Payment reports from the rollups: charges and refunds counted once, by final outcome.

`cp.rollup_procedure` counts charge and refund procedures per carrier, merchant, kind, final
outcome and currency. sched.fold_rollups adds a procedure when it folds the procedure's latest charge
(refund) call and finds the procedure final, so report.success_by_carrier, report.retries_per_success,
report.refunds and report.carrier_summary add up a few hundred rows instead of scanning the payments;
their in-flight part reads only the open calls (the call queue and the partial index
carrier_call_to_reconcile). Existing databases are backfilled here up to the fold's watermark.

`cp.rollup_state.stragglers_checked_at`: the fold re-checks the whole set of remembered unsettled calls
on a slower cadence than it folds new calls.

"""

from carrierpay.revisions import downgrade, executes

revision = "0021"
down_revision = "0020"

upgrade = executes(
    """
        create table cp.rollup_procedure (
            carrier_id          integer not null,
            merchant_id         integer not null,
            kind                cp.procedure_kind not null,
            outcome             text not null check (outcome in ('succeeded', 'failed')),
            currency            char(3) not null,
            procedures          bigint not null default 0,
            subscription_charges bigint not null default 0,
            renewals            bigint not null default 0,
            step_downs          bigint not null default 0,
            collected_minor     bigint not null default 0,
            amount_minor        bigint not null default 0,
            primary key (carrier_id, merchant_id, kind, outcome, currency)
        );
        comment on table cp.rollup_procedure is
            'Final charge and refund procedures per carrier, merchant (0: none), kind, outcome and currency; '
            'outcome succeeded includes refunded and partially refunded charges; folded by sched.fold_rollups';

        alter table cp.rollup_state add column stragglers_checked_at timestamptz;
        comment on column cp.rollup_state.stragglers_checked_at is
            'When sched.fold_rollups last re-checked every remembered straggler (business time)';

        -- the procedures whose latest call the fold has already passed
        insert into cp.rollup_procedure (carrier_id, merchant_id, kind, outcome, currency, procedures,
                                         subscription_charges, renewals, step_downs, collected_minor, amount_minor)
        select p.carrier_id, coalesce(p.merchant_id, 0), p.kind,
               case when p.status = 'failed' then 'failed' else 'succeeded' end, p.currency, count(*),
               count(*) filter (where p.subscription_id is not null),
               count(*) filter (where p.subscription_id is not null and p.period_index >= 1),
               count(*) filter (where p.subscription_id is not null and p.price_point_id is distinct from s.price_point_id),
               coalesce(sum(p.collected_minor), 0), coalesce(sum(p.amount_minor), 0)
        from cp.procedure p
        left join cp.subscription s on s.subscription_id = p.subscription_id
        where p.kind in ('charge', 'refund')
          and p.status in ('succeeded', 'partially_refunded', 'refunded', 'failed')
          and exists (select 1 from cp.rollup_state r
                      where r.folded_through >= (select max(c.call_id) from cp.carrier_call c
                                                 where c.procedure_id = p.procedure_id and c.operation = p.kind::text))
          and not exists (select 1 from cp.rollup_straggler g join cp.carrier_call c using (call_id)
                          where c.procedure_id = p.procedure_id)
        group by 1, 2, 3, 4, 5;
        """
)
