"""The `smpp` section of a carrier spec: schema validation, defaults, bind secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from carrierpay.adapters import schemas
from carrierpay.parsing import load_yaml

SCHEMA_FILE = "smpp.schema.json"
SECRETS_FILE_ENV = "CARRIERPAY_SECRETS_FILE"

# SMPP 3.4 section 4.1: C-Octet Strings whose sizes include the terminating NUL.
MAX_SYSTEM_ID = 15
MAX_PASSWORD = 8
MAX_SYSTEM_TYPE = 12


class SmppConfigError(ValueError):
    """An invalid `smpp` section or a missing/invalid bind secret; the message names the field."""


@cache
def smpp_schema() -> dict[str, Any]:
    return schemas.load(SCHEMA_FILE)


def _path(prefix: str, parts) -> str:
    out = prefix
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate_smpp_section(section: Any, prefix: str = "smpp") -> None:
    """Raise SmppConfigError listing every schema violation with the path of the bad field."""
    validator = jsonschema.Draft202012Validator(smpp_schema())
    errors = sorted(validator.iter_errors(section), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            lines.append(f"{_path(prefix, e.absolute_path)}: {e.message}")
        raise SmppConfigError("invalid SMPP section:\n  " + "\n  ".join(lines))


def check_bind_credentials(system_id: str, password: str, system_type: str = "") -> None:
    """Lengths SMSCs enforce; checked before connecting so a bad value fails loudly, not as a bind refusal."""
    for name, value, limit in (
        ("system_id", system_id, MAX_SYSTEM_ID),
        ("password", password, MAX_PASSWORD),
        ("system_type", system_type, MAX_SYSTEM_TYPE),
    ):
        if not isinstance(value, str):
            raise SmppConfigError(f"smpp.{name}: must be a string")
        if len(value) > limit:
            raise SmppConfigError(f"smpp.{name}: {len(value)} characters, SMPP 3.4 allows at most {limit}")
        if not value.isascii():
            raise SmppConfigError(f"smpp.{name}: must be ASCII")
    if not system_id:
        raise SmppConfigError("smpp.system_id: must not be empty")


def load_secrets_file(path: str | os.PathLike | None = None) -> dict[str, str]:
    """A YAML or JSON mapping NAME -> value; `$CARRIERPAY_SECRETS_FILE` when no path is given."""
    path = path or os.environ.get(SECRETS_FILE_ENV)
    if not path:
        return {}
    try:
        data = load_yaml(Path(path).read_text("utf-8"), str(path)) or {}
    except ValueError as exc:
        raise SmppConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise SmppConfigError(f"{path}: a secrets file must be a mapping of NAME: value")
    return {str(k): str(v) for k, v in data.items()}


def resolve_secret(name: str, secrets: Mapping[str, str] | None = None) -> str:
    """Look a secret up in the given mapping, then the environment, then the secrets file."""
    if secrets is not None and name in secrets:
        return str(secrets[name])
    if name in os.environ:
        return os.environ[name]
    from_file = load_secrets_file()
    if name in from_file:
        return from_file[name]
    raise SmppConfigError(f"smpp.password_secret: secret {name!r} is not set (env var or ${SECRETS_FILE_ENV})")


@dataclass(frozen=True)
class PricePoint:
    amount_minor: int
    currency: str | None = None
    short_code: str | None = None
    service_type: str | None = None
    tlv: dict[str, Any] | None = None


@dataclass(frozen=True)
class SmppConfig:
    host: str
    port: int
    system_id: str
    password_secret: str
    source_short_codes: tuple[str, ...]
    system_type: str = ""
    window: int = 10
    tps: float | None = None
    enquire_link_interval_s: float = 30.0
    response_timeout_s: float = 15.0
    reconnect_delay_s: float = 1.0
    reconnect_max_delay_s: float = 60.0
    throttle_pause_s: float = 1.0
    throttle_max_retries: int = 10
    default_short_code: str | None = None
    source_addr_ton: int = 3
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    default_data_coding: str = "gsm7"
    max_parts: int = 6
    registered_delivery: int = 1
    pricing: str | None = None
    price_points: tuple[PricePoint, ...] = ()
    dlr_detect: tuple[str, ...] = ("esm_class", "tlv", "text")
    dlr_format: str = "standard"
    dlr_id_format: str = "as_is"
    dlr_error_map: dict[str, str] = field(default_factory=dict)
    command_status_map: dict[int, str] = field(default_factory=dict)
    mo_id_tlv: int | None = None

    @property
    def short_code(self) -> str:
        return self.default_short_code or self.source_short_codes[0]

    def price_point(self, amount_minor: int, currency: str | None = None) -> PricePoint | None:
        for pp in self.price_points:
            if pp.amount_minor == amount_minor and (currency is None or pp.currency in (None, currency)):
                return pp
        return None


def load_smpp_config(section: Mapping[str, Any], *, throughput_tps: float | None = None,
                     prefix: str = "smpp") -> SmppConfig:
    """Validate an `smpp` section and fill defaults. `throughput_tps` is the spec's top-level throughput.tps."""
    validate_smpp_section(section, prefix)
    s = dict(section)
    premium = s.pop("premium", None) or {}
    dlr = s.pop("dlr", None) or {}
    csm = s.pop("command_status_map", None) or {}
    s.pop("bind_mode", None)
    if isinstance(s.get("mo_id_tlv"), str):
        s["mo_id_tlv"] = int(s["mo_id_tlv"], 16)
    if s.get("tps") is None and throughput_tps is not None:
        s["tps"] = throughput_tps
    s["source_short_codes"] = tuple(s["source_short_codes"])
    for key in ("enquire_link_interval_s", "response_timeout_s", "reconnect_delay_s", "reconnect_max_delay_s",
                "throttle_pause_s"):
        if key in s:
            s[key] = float(s[key])
    return SmppConfig(
        **s,
        pricing=premium.get("pricing"),
        price_points=tuple(PricePoint(**pp) for pp in premium.get("price_points", ())),
        dlr_detect=tuple(dlr.get("detect", ("esm_class", "tlv", "text"))),
        dlr_format=dlr.get("format", "standard"),
        dlr_id_format=dlr.get("id_format", "as_is"),
        dlr_error_map={str(k): v for k, v in (dlr.get("error_map") or {}).items()},
        command_status_map={int(k, 16): v for k, v in csm.items()},
    )
