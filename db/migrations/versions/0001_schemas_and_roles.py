"""Schemas, extensions and the cluster roles of the role model.

"""

from alembic import op

from carrierpay.revisions import downgrade

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("create extension if not exists pgcrypto")
    # cp: internal tables; api/admin/adapter/report: the public SQL interface by audience.
    for schema in ("cp", "api", "admin", "adapter", "report"):
        op.execute(f"create schema if not exists {schema}")
    # Roles are cluster-wide, so another database on the same server may have made them already.
    op.execute(
        """
        do $$
        declare
            v_role text;
        begin
            foreach v_role in array array['carrierpay_admin', 'carrierpay_adapter',
                                          'carrierpay_merchant', 'carrierpay_reporter'] loop
                if not exists (select 1 from pg_roles where rolname = v_role) then
                    execute format('create role %I nologin', v_role);
                end if;
            end loop;
        end
        $$
        """
    )
    # The single row of the business clock read by cp.clock_now() (db/procedures/clock.sql).
    op.execute(
        """
        create table cp.clock_offset (
            singleton  boolean primary key default true check (singleton),
            offset_by  interval not null default interval '0'
        )
        """
    )
    op.execute("revoke all on schema cp from public")
    op.execute("revoke create on schema public from public")
    op.execute("grant usage on schema api to carrierpay_merchant, carrierpay_admin")
    op.execute("grant usage on schema admin to carrierpay_admin")
    op.execute("grant usage on schema adapter to carrierpay_adapter")
    op.execute("grant usage on schema report to carrierpay_reporter, carrierpay_admin")
    # Functions are granted one by one in db/procedures; nobody but the owner runs them by default.
    for schema in ("api", "admin", "adapter", "report", "cp"):
        op.execute(f"alter default privileges in schema {schema} revoke execute on functions from public")
