"""Which connector speaks to a carrier: chosen from the spec's `transport`, built with the secrets
from the environment (or CARRIERPAY_SECRETS_FILE) and the base URL from CARRIERPAY_BASE_URL_<CODE>.

    factory = connector_factory()            # what AdapterDaemon and the reconciler take
    connector = await factory("oneapi_gb", spec_document)

An SMPP carrier's session also carries MO messages and delivery receipts into the database, so
`connector_factory(database_url=...)` builds it (carrierpay.adapters.smpp.bridge); other transports
can register a builder with `register_transport(name, builder)`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from carrierpay.adapters.http import CALLBACK_BASE_VARIABLE, HttpConnector
from carrierpay.adapters.secrets import Secrets
from carrierpay.adapters.spec import CarrierSpec, load_spec

# builder(spec, secrets, *, callback_url) -> connector with `async execute(call)` (and optionally `close()`)
TransportBuilder = Callable[..., Any]
ConnectorFactory = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


def _build_http(spec: CarrierSpec, secrets: Secrets, *, callback_url: str | None = None) -> HttpConnector:
    return HttpConnector(spec, secrets, callback_url=callback_url)


def _build_smpp(spec: CarrierSpec, secrets: Secrets, *, callback_url: str | None = None) -> Any:
    raise NotImplementedError(
        f"carrier {spec.code} uses transport smpp, and no SMPP connector is registered: "
        "SMPP sessions are built by connector_factory(database_url=...), which the daemons use"
    )


_TRANSPORTS: dict[str, TransportBuilder] = {"http": _build_http, "smpp": _build_smpp}


def register_transport(name: str, builder: TransportBuilder) -> None:
    """Make `transport: <name>` specs buildable (the SMPP connector registers itself here)."""
    _TRANSPORTS[name] = builder


def callback_url_for(spec: CarrierSpec, base: str | None = None) -> str | None:
    """Our callback server's URL for this carrier: base + `callbacks.path` (default /callbacks/<code>)."""
    base = base or os.environ.get(CALLBACK_BASE_VARIABLE)
    if not base:
        return None
    path = (spec.data.get("callbacks") or {}).get("path") or f"/callbacks/{spec.code}"
    return base.rstrip("/") + path


def build_connector(
    spec: CarrierSpec | Mapping[str, Any] | str,
    *,
    secrets: Secrets | Mapping[str, str] | None = None,
    base_url: str | None = None,
    callback_base: str | None = None,
) -> Any:
    """The connector for one carrier. `spec` is a CarrierSpec, a spec document (as stored in
    cp.carrier.spec), a carrier code or a file; base URL: argument, CARRIERPAY_BASE_URL_<CODE>, spec."""
    if not isinstance(spec, CarrierSpec) or base_url:
        spec = load_spec(spec.data if isinstance(spec, CarrierSpec) else spec, base_url=base_url)
    secrets = Secrets.of(secrets)  # none given: the environment and CARRIERPAY_SECRETS_FILE
    transport = spec.data.get("transport", "http")
    builder = _TRANSPORTS.get(transport)
    if builder is None:
        raise NotImplementedError(f"carrier {spec.code}: no connector for transport {transport!r}")
    return builder(spec, secrets, callback_url=callback_url_for(spec, callback_base))


def connector_factory(
    *,
    secrets: Secrets | Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    callback_base: str | None = None,
    database_url: str | None = None,
) -> ConnectorFactory:
    """A `factory(code, spec) -> connector` for the daemons. `base_urls` (code -> URL) wins over the
    environment; secrets default to the environment and CARRIERPAY_SECRETS_FILE."""
    shared = secrets if isinstance(secrets, Secrets) else (Secrets(secrets) if secrets else None)

    async def factory(code: str, spec: Mapping[str, Any]) -> Any:
        if spec.get("transport") == "smpp":
            # An SMPP session also receives MO messages and receipts, which it writes to the database.
            if database_url is None:
                raise ValueError(f"carrier {code} speaks SMPP: the connector factory needs the database URL")
            from carrierpay.adapters.smpp.bridge import smpp_connector_for

            return await smpp_connector_for(code, spec, database_url,
                                            secrets=secrets if isinstance(secrets, Mapping) else None)
        return build_connector(
            spec,
            secrets=shared or Secrets.from_environment(),
            base_url=(base_urls or {}).get(code),
            callback_base=callback_base,
        )

    return factory
