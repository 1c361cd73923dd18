"""Request bodies out (JSON, XML/SOAP, form) and answers in (JSON, XML, form), with path extraction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jsonpath_ng.ext import parse as parse_jsonpath
from lxml import etree

from carrierpay.adapters.money import ExactFloat

CONTENT_TYPES = {
    "json": "application/json",
    "xml": "text/xml; charset=utf-8",
    "form": "application/x-www-form-urlencoded",
}
# What we accept back, by declared response format. Carriers mislabel often enough that each
# spec may widen this, but an HTML error page must never be read as a carrier answer.
ACCEPTED_CONTENT_TYPES = {
    "json": ["application/json", "+json", "text/json"],
    "xml": ["text/xml", "application/xml", "application/soap+xml", "+xml"],
    "form": ["application/x-www-form-urlencoded", "text/plain"],
}
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class UnreadableResponse(ValueError):
    """The answer is not in the format the spec promised (garbage, HTML, wrong content type)."""


def encode_body(encoding: str, body: Any) -> tuple[bytes | None, str | None]:
    if body is None or encoding == "none":
        return None, None
    if encoding == "json":
        text = body if isinstance(body, str) else dump_json(body)
        return text.encode(), CONTENT_TYPES["json"]
    if encoding == "form":
        text = body if isinstance(body, str) else urlencode([(k, "" if v is None else v) for k, v in body.items()])
        return text.encode(), CONTENT_TYPES["form"]
    if encoding == "xml":
        if not isinstance(body, str):
            raise ValueError("an XML body is a template string")
        return body.strip().encode(), CONTENT_TYPES["xml"]
    raise ValueError(f"unknown encoding {encoding!r}")


@dataclass
class ParsedBody:
    fmt: str
    document: Any  # dict/list for json and form, lxml element for xml


def parse_body(
    fmt: str,
    content_type: str | None,
    body: bytes,
    *,
    content_types: list[str] | None = None,
    allow_empty: bool = False,
) -> ParsedBody:
    if not body.strip():
        if allow_empty:
            return ParsedBody(fmt, {} if fmt != "xml" else None)
        raise UnreadableResponse("empty body")
    media = (content_type or "").split(";")[0].strip().lower()
    accepted = content_types or ACCEPTED_CONTENT_TYPES[fmt]
    if not any(media == item or (item.startswith("+") and media.endswith(item)) for item in accepted):
        raise UnreadableResponse(f"content type {media or 'missing'!r} where {fmt} was expected")
    return ParsedBody(fmt, parse_document(fmt, body))


def dump_json(value: Any) -> str:
    """Compact JSON in which a decimal (an amount in `major_number` format) is a number written digit for
    digit: a float would turn 1.10 into 1.1 and lose digits beyond 2**53."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("an amount must be a finite number")
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(key), ensure_ascii=False)}:{dump_json(item)}"
                              for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump_json(item) for item in value) + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = ExactFloat(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def parse_document(fmt: str, body: bytes) -> Any:
    if fmt == "json":
        # Strict JSON only: NaN, Infinity and numbers beyond a float (1e400) are refused here rather
        # than becoming values no database column or JSON writer accepts; nesting deep enough to
        # exhaust the parser's recursion is an unreadable document, not a crash.
        try:
            return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise UnreadableResponse(f"not JSON: {str(exc)[:120]}") from exc
    if fmt == "form":
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnreadableResponse(f"not form-encoded: {exc}") from exc
    if fmt == "xml":
        try:
            return etree.fromstring(body, parser=_XML_PARSER)
        except etree.XMLSyntaxError as exc:
            raise UnreadableResponse(f"not XML: {exc}") from exc
    raise ValueError(f"unknown format {fmt!r}")


@lru_cache(maxsize=1024)
def compile_jsonpath(expression: str):
    """Parsed JSONPath, cached: jsonpath-ng builds a fresh parser per parse, which costs ~30 ms."""
    return parse_jsonpath(expression)


@lru_cache(maxsize=1024)
def _xpath(expression: str, namespaces: tuple[tuple[str, str], ...]):
    return etree.XPath(expression, namespaces=dict(namespaces))


def extract(parsed: ParsedBody, expressions: Mapping[str, str], namespaces: Mapping[str, str] | None = None):
    """Each named expression's first match (scalars as found, XML text as strings); absent if none."""
    found: dict[str, Any] = {}
    if parsed.document is None:
        return found
    for name, expression in expressions.items():
        value = (
            _xpath_value(parsed.document, expression, namespaces or {})
            if parsed.fmt == "xml"
            else _jsonpath_value(parsed.document, expression)
        )
        if value is not None:
            found[name] = value
    return found


def _jsonpath_value(document: Any, expression: str) -> Any:
    matches = compile_jsonpath(expression).find(document)
    if not matches:
        return None
    value = matches[0].value
    return value


def _xpath_value(document: Any, expression: str, namespaces: Mapping[str, str]) -> Any:
    result = _xpath(expression, tuple(sorted(namespaces.items())))(document)
    if isinstance(result, list):
        if not result:
            return None
        result = result[0]
    if isinstance(result, etree._Element):
        return (result.text or "").strip()
    if isinstance(result, bool):
        return result
    if isinstance(result, float):
        return int(result) if result.is_integer() else result
    text = str(result).strip()
    return text if text else None


def xml_record_values(record: Any, columns: Mapping[str, str], namespaces: Mapping[str, str] | None = None):
    return {name: _xpath_value(record, expr, namespaces or {}) for name, expr in columns.items()}


def select_records(document: Any, expression: str, namespaces: Mapping[str, str] | None = None) -> list[Any]:
    return list(_xpath(expression, tuple(sorted((namespaces or {}).items())))(document))
