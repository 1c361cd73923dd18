"""Property-based fuzz of the whole served OpenAPI document with schemathesis: every operation, with
generated requests (valid and not), answers without a 5xx and as its schema says."""

from __future__ import annotations

import asyncio
import threading

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from carrierpay.http_api.server import OPENAPI_PATH, ApiServer
from tests.http_api.kit import add_client, gateway_url


class ServerThread:
    """The API server on its own event loop, for a synchronous client."""

    def __init__(self, url: str):
        self.url = url
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = ApiServer(self.url)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(30)
        return self.server.base_url

    def __exit__(self, *exc_info) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def test_every_operation_answers_by_its_schema(world_url):
    client = add_client(world_url)
    schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))
    failures = []
    with ServerThread(gateway_url(world_url)) as base, requests.Session() as session:
        answer = session.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"]))
        token = answer.json()["access_token"]
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path == "/oauth2/token":
                continue  # a form, not JSON; tests/http_api/test_payments.py covers its errors

            @given(case=operation.as_strategy())
            @settings(max_examples=10, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=base, session=session,
                                     headers={"Authorization": f"Bearer {token}"})
                assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:300])
                # Requests the schema allows may still break a business rule (an unknown currency, a
                # number no carrier serves): those answer 4xx by design, so "accepted" is not checked.
                case.validate_response(response, excluded_checks=[schemathesis.checks.not_a_server_error,
                                                                   schemathesis.checks.positive_data_acceptance])

            try:
                check()
            except Exception as exc:  # gather every operation's first failure, not only the first one
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert failures == [], "\n\n".join(failures)
