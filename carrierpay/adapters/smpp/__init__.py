"""SMPP 3.4 transport: the ESME connector, text encoding, receipt parsing and the `smpp` spec section."""

from .config import (
    PricePoint,
    SmppConfig,
    SmppConfigError,
    check_bind_credentials,
    load_smpp_config,
    resolve_secret,
    validate_smpp_section,
)
from .connector import SmppBindError, SmppConnector
from .dlr import DeliveryReceipt, parse_receipt

__all__ = [
    "DeliveryReceipt",
    "PricePoint",
    "SmppBindError",
    "SmppConfig",
    "SmppConfigError",
    "SmppConnector",
    "check_bind_credentials",
    "load_smpp_config",
    "parse_receipt",
    "resolve_secret",
    "validate_smpp_section",
]
