"""Countries: the currency and default time zone of each, so every ISO 3166-1 country can be shipped.

The rows themselves are reference data re-applied by every migrate (db/procedures/countries.sql).

"""

from carrierpay.revisions import downgrade, executes

revision = "0009"
down_revision = "0008"

upgrade = executes(
    """
        alter table cp.country
            add column currency char(3) check (currency ~ '^[A-Z]{3}$'),
            add column timezone text;
        comment on column cp.country.currency is 'ISO 4217 currency in legal tender (CLDR); null where none';
        comment on column cp.country.timezone is
            'IANA zone of the capital or most populous region; carriers name their own in their spec';
        """
)
