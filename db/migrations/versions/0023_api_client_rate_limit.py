"""Merchant HTTP API: a request limit per API client.

`cp.api_client.requests_per_second`: the sustained rate the client's requests may reach (its burst is
one second's worth); null means the server's default (`carrierpay api serve --rate-limit`). The server
counts requests in process, so no row is written per request.

"""

from carrierpay.revisions import downgrade, executes

revision = "0023"
down_revision = "0022"

upgrade = executes(
    """
        alter table cp.api_client add column requests_per_second integer
            check (requests_per_second between 1 and 100000);
        comment on column cp.api_client.requests_per_second is
            'Requests per second the client may make (burst: one second''s worth); null: the server default';
        """
)
