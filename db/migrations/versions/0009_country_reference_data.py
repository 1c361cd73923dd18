"""Countries: the currency and default time zone of each, so every ISO 3166-1 country can be shipped.

The rows themselves are reference data re-applied by every migrate (db/procedures/countries.sql).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table cp.country
            add column currency char(3) check (currency ~ '^[A-Z]{3}$'),
            add column timezone text;
        comment on column cp.country.currency is 'ISO 4217 currency in legal tender (CLDR); null where none';
        comment on column cp.country.timezone is
            'IANA zone of the capital or most populous region; carriers name their own in their spec';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
