"""Jinja2 rendering for request templates: one sandboxed environment, strict about undefined names."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from carrierpay.adapters.money import JsonNumber

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


def _tel_uri(msisdn: str) -> str:
    msisdn = str(msisdn)
    return msisdn if msisdn.startswith("tel:") else f"tel:{msisdn}"


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value))


def _urlquote(value: Any, safe: str = "") -> str:
    return quote(str(value), safe=safe)


def _hash(name: str):
    def digest(value: Any) -> str:
        return hashlib.new(name, str(value).encode()).hexdigest()

    return digest


def _b64(value: Any) -> str:
    return base64.b64encode(str(value).encode()).decode()


def _environment(autoescape: bool) -> SandboxedEnvironment:
    # Sandboxed because specs are data contributed per carrier, not code; StrictUndefined because a
    # misspelt variable must fail loudly rather than send an empty field to a carrier.
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=autoescape,
        # An absent optional field (a call without a description) renders empty, never as "None".
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(
        tel_uri=_tel_uri,
        digits=_digits,
        urlquote=_urlquote,
        md5=_hash("md5"),
        sha1=_hash("sha1"),
        sha256=_hash("sha256"),
        b64=_b64,
    )
    env.globals.update(uuid4=lambda: uuid.uuid4().hex, Decimal=Decimal)
    return env


_PLAIN = _environment(autoescape=False)
_XML = _environment(autoescape=True)


def environment(xml: bool = False) -> SandboxedEnvironment:
    return _XML if xml else _PLAIN


def check_template(source: str) -> str | None:
    """The syntax error in a template, or None when it compiles."""
    try:
        _PLAIN.parse(source)
    except TemplateSyntaxError as exc:
        return f"template error line {exc.lineno}: {exc.message}"
    return None


def template_variables(source: str) -> set[str]:
    """The top-level names a template reads (empty when it does not compile)."""
    try:
        return set(meta.find_undeclared_variables(_PLAIN.parse(source)))
    except TemplateSyntaxError:
        return set()


# Compiling a template costs a thousand times more than rendering it, and a carrier's spec has a few
# dozen templates that every call renders again: compile each source once per process.
@lru_cache(maxsize=4096)
def _template(source: str, xml: bool):
    return environment(xml).from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _PLAIN.compile_expression(source, undefined_to_none=False)


def render_text(source: str, context: dict[str, Any], *, xml: bool = False) -> str:
    return _template(source, xml).render(context)


def render_value(source: Any, context: dict[str, Any]) -> Any:
    """Render a structured template: strings are templates, containers are walked.

    A string that is exactly one `{{ expression }}` keeps the expression's native type, so a
    JSON body can carry integers and booleans without quoting games in the template.
    """
    if isinstance(source, dict):
        return {str(key): render_value(value, context) for key, value in source.items()}
    if isinstance(source, list):
        return [render_value(item, context) for item in source]
    if not isinstance(source, str):
        return source
    single = _SINGLE_EXPRESSION.match(source)
    if single and "{{" not in single.group(1) and "}}" not in single.group(1):
        value = _expression(single.group(1))(**context)
        if isinstance(value, Undefined):
            raise UndefinedError(f"{single.group(1).strip()!r} is undefined")
        if isinstance(value, Decimal) and not isinstance(value, JsonNumber):  # an amount keeps its type
            return str(value)
        return value
    return _template(source, False).render(context)
