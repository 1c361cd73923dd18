"""Carrier connectors: spec loader, the generic HTTP connector, callbacks and result files."""

from carrierpay.adapters.callbacks import CallbackError, CallbackRejected, CallbackUnreadable, verify_and_parse_callback
from carrierpay.adapters.http import HttpConnector, fetch_report
from carrierpay.adapters.reports import ReportNotReady, ReportUnavailable, ReportUnreadable, parse_report
from carrierpay.adapters.secrets import MissingSecret, Secrets
from carrierpay.adapters.spec import CarrierSpec, SpecError, load_spec, validate_spec

__all__ = [
    "CallbackError",
    "CallbackRejected",
    "CallbackUnreadable",
    "CarrierSpec",
    "HttpConnector",
    "MissingSecret",
    "ReportNotReady",
    "ReportUnavailable",
    "ReportUnreadable",
    "Secrets",
    "SpecError",
    "fetch_report",
    "load_spec",
    "parse_report",
    "validate_spec",
    "verify_and_parse_callback",
]
