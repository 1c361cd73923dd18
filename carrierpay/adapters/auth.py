"""Authentication towards carriers: Basic, API key, bearer, OAuth2 client credentials, HMAC
request signing, ParlayX SOAP header digest, and mutual TLS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from yarl import URL

from carrierpay.adapters.secrets import MissingSecret, Secrets
from carrierpay.adapters.spec import CarrierSpec
from carrierpay.adapters.templates import render_text


class AuthUnavailable(RuntimeError):
    """We could not obtain credentials (token endpoint down or refusing); nothing was sent to the carrier.
    `unreachable` when the token endpoint could not be reached at all (the carrier is down)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class OutgoingRequest:
    method: str
    url: URL
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # Values made for this request alone (a signature, a digest): masked in its log, then forgotten.
    secrets: list[str] = field(default_factory=list)


# (url, form fields, headers) -> (HTTP status, parsed JSON or None)
TokenFetcher = Callable[[str, dict[str, str], dict[str, str]], Awaitable[tuple[int, Any]]]


class Auth:
    """No authentication; also the base every scheme extends."""

    # Template variables that are per-request secrets (masked in that request's log only).
    secret_vars: tuple[str, ...] = ()

    def __init__(self, config: dict[str, Any], secrets: Secrets) -> None:
        self.config = config
        self.secrets = secrets
        self.revealed: set[str] = set()

    async def template_vars(self) -> dict[str, Any]:
        return {}

    def add_body_fields(self, body: Any) -> Any:
        return body

    async def apply(self, request: OutgoingRequest) -> None:
        return None

    def invalidate(self) -> bool:
        """Forget cached credentials after a 401; True when trying again with fresh ones can help."""
        return False


class BasicAuth(Auth):
    async def apply(self, request: OutgoingRequest) -> None:
        user = self.secrets.resolve(self.config["username"])
        password = self.secrets.resolve(self.config["password"])
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.revealed.add(token)
        request.headers["Authorization"] = f"Basic {token}"


class ApiKeyAuth(Auth):
    def _key(self) -> str:
        return self.secrets.resolve(self.config["value"])

    async def template_vars(self) -> dict[str, Any]:
        return {"api_key": self._key()}

    def add_body_fields(self, body: Any) -> Any:
        if self.config["in"] == "body" and isinstance(body, dict):
            body = {**body, self.config["name"]: self._key()}
        return body

    async def apply(self, request: OutgoingRequest) -> None:
        if self.config["in"] == "header":
            request.headers[self.config["name"]] = self._key()
        elif self.config["in"] == "query":
            request.url = request.url.update_query({self.config["name"]: self._key()})


class BearerAuth(Auth):
    async def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.secrets.resolve(self.config['token'])}"


class OAuth2ClientCredentials(Auth):
    """Client-credentials grant with the token cached, refreshed at a fraction of its announced lifetime
    (`expires_in`) and after a 401.

    A fixed margin before expiry does not fit every carrier: some issue tokens that live 30 s, and a 30 s
    margin would then fetch a token per call. So a token is used for `refresh_fraction` (0.8) of its
    lifetime; `refresh_margin_s`, when a spec sets it, renews earlier still for long-lived tokens, but
    never before half the lifetime has passed."""

    def __init__(self, config: dict[str, Any], secrets: Secrets, token_url: str, fetch: TokenFetcher) -> None:
        super().__init__(config, secrets)
        self.token_url = token_url
        self._fetch = fetch
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._clock = time.monotonic
        self.tokens_fetched = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_at

    def refresh_after(self, lifetime_s: float) -> float:
        """Seconds after issue at which a token announced to live lifetime_s is renewed."""
        after = lifetime_s * float(self.config.get("refresh_fraction", 0.8))
        margin = self.config.get("refresh_margin_s")
        if margin is not None:
            after = min(after, max(lifetime_s - float(margin), lifetime_s / 2))
        return after

    async def token(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if not self._fresh():  # another request may have refreshed it while we waited
                await self._refresh()
        return self._token  # type: ignore[return-value]

    async def _refresh(self) -> None:
        client_id = self.secrets.resolve(self.config["client_id"])
        client_secret = self.secrets.resolve(self.config["client_secret"])
        form = {"grant_type": "client_credentials"}
        if self.config.get("scope"):
            form["scope"] = self.config["scope"]
        headers: dict[str, str] = {}
        if self.config.get("client_auth", "basic") == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        else:
            form.update(client_id=client_id, client_secret=client_secret)
        try:
            status, answer = await self._fetch(self.token_url, form, headers)
        except Exception as exc:  # any failure here happens before the operation is sent
            raise AuthUnavailable(f"token endpoint unreachable: {exc.__class__.__name__}: {exc}",
                                  unreachable=True) from exc
        if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            raise AuthUnavailable(f"token endpoint answered HTTP {status} without an access_token")
        # The previous token stays masked too: requests sent with it may still be logging.
        self.revealed = {token for token in (self._token, str(answer["access_token"])) if token}
        self._token = str(answer["access_token"])
        try:
            expires_in = float(answer.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0.0
        if not 0 < expires_in < float("inf"):  # absent, zero, negative or NaN: the spec's default
            expires_in = float(self.config.get("default_expires_in_s", 3600))
        self._refresh_at = self._clock() + self.refresh_after(expires_in)
        self.tokens_fetched += 1

    async def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"Bearer {await self.token()}"

    def invalidate(self) -> bool:
        self._token = None
        self._refresh_at = 0.0
        return True


class HmacSigning(Auth):
    """Signs a canonical string built by a template from method, path, query, body and timestamp."""

    async def apply(self, request: OutgoingRequest) -> None:
        body_text = (request.body or b"").decode()
        key_id = self.secrets.resolve(self.config["key_id"])
        signing_key = self.secrets.resolve(self.config["signing_key"])
        context = {
            "method": request.method,
            "path": request.url.path,
            "query": urlencode(sorted(request.url.query.items())),
            "path_qs": request.url.path_qs,
            "body": body_text,
            "body_sha256": hashlib.sha256(request.body or b"").hexdigest(),
            "body_md5": hashlib.md5(request.body or b"").hexdigest(),
            "timestamp": str(int(time.time())),
            "nonce": uuid.uuid4().hex,
            "key_id": key_id,
            "host": request.url.host or "",
        }
        canonical = render_text(self.config["canonical"], context)
        algorithm = self.config.get("algorithm", "sha256")
        digest = hmac.new(signing_key.encode(), canonical.encode(), algorithm).digest()
        signature = digest.hex() if self.config.get("encoding", "hex") == "hex" else base64.b64encode(digest).decode()
        request.secrets.append(signature)
        context["signature"] = signature
        for name, template in self.config["headers"].items():
            request.headers[name] = render_text(str(template), context)


class SoapDigest(Auth):
    """ParlayX RequestSOAPHeader: spPassword = MD5(spId + password + timeStamp), placed by the body template."""

    secret_vars = ("sp_password",)

    async def template_vars(self) -> dict[str, Any]:
        sp_id = self.secrets.resolve(self.config["sp_id"])
        password = self.secrets.resolve(self.config["password"])
        timestamp = datetime.now(UTC).strftime(self.config.get("timestamp_format", "%Y%m%d%H%M%S"))
        digest = hashlib.md5(f"{sp_id}{password}{timestamp}".encode()).hexdigest()
        if self.config.get("digest_case", "lower") == "upper":
            digest = digest.upper()
        return {
            "sp_id": sp_id,
            "sp_password": digest,
            "timestamp": timestamp,
            "service_id": self.config.get("service_id", ""),
        }


def build_auth(spec: CarrierSpec, secrets: Secrets, fetch_token: TokenFetcher, base_url: str) -> Auth:
    config = spec.data.get("auth") or {"type": "none"}
    kind = config["type"]
    if kind == "basic":
        return BasicAuth(config, secrets)
    if kind == "api_key":
        return ApiKeyAuth(config, secrets)
    if kind == "bearer":
        return BearerAuth(config, secrets)
    if kind == "oauth2_client_credentials":
        token_url = config["token_url"]
        if not token_url.startswith(("http://", "https://")):
            token_url = base_url + "/" + token_url.lstrip("/")
        return OAuth2ClientCredentials(config, secrets, token_url, fetch_token)
    if kind == "hmac":
        return HmacSigning(config, secrets)
    if kind == "soap_digest":
        return SoapDigest(config, secrets)
    return Auth(config, secrets)


class TlsConfigError(ValueError):
    """The spec's `tls` section names a certificate, key or CA bundle that cannot be used. Raised when
    the connector is built, so nothing is ever sent to that carrier with a half-built TLS setup."""


def build_ssl_context(spec: CarrierSpec, secrets: Secrets) -> ssl.SSLContext | None:
    """The client TLS context for a carrier. None means the default (the system's CAs, host name
    checked). Otherwise: trust `tls.ca_bundle` instead of the system's CAs, present
    `tls.client_cert`/`tls.client_key` (mutual TLS), and with `verify: false` (sandboxes only) check
    nothing about the server, while still presenting the client certificate."""
    tls = spec.data.get("tls")
    if not tls:
        return None

    def file(key: str) -> str:
        try:
            name = secrets.resolve(tls[key])
        except MissingSecret as exc:
            raise TlsConfigError(f"carrier {spec.code}: tls.{key}: {exc}") from None
        return spec.resolve_path(str(name))

    ca_bundle = file("ca_bundle") if tls.get("ca_bundle") else None
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"carrier {spec.code}: tls.ca_bundle {ca_bundle}: {exc}") from exc
    if tls.get("verify") is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.get("client_cert"):
        cert, key = file("client_cert"), file("client_key")
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"carrier {spec.code}: tls.client_cert {cert} / tls.client_key {key}: {exc}") from exc
    return context
