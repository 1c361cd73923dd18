"""Scrub secrets, tokens, passwords and PINs out of logged traffic before it leaves the connector."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MASK = "***"
# Key names whose values are secret wherever they appear: headers, JSON keys, form fields, XML tags.
SENSITIVE_NAME = re.compile(
    r"(?i)(authorization|password|passwd|secret|token|^pin$|_pin$|^pin_|pincode|api[-_]?key|signature|^sig$|"
    r"cookie|credential|sppassword)"
)
_XML_ELEMENT = re.compile(r"<((?:[\w.-]+:)?([\w.-]+))(\s[^>]*)?>([^<]*)</\1>")


class Redactor:
    """Masks by name (sensitive keys) and by value (every secret or token the connector has seen)."""

    def __init__(self, values: Callable[[], Iterable[str]]) -> None:
        self._values = values

    def _known(self, extra: Iterable[str] = ()) -> list[str]:
        # Longest first, so a secret containing another secret is masked whole.
        return sorted({v for v in [*self._values(), *extra] if v and len(v) >= 4}, key=len, reverse=True)

    def text(self, value: str, extra: Iterable[str] = ()) -> str:
        def mask_element(match: re.Match[str]) -> str:
            if SENSITIVE_NAME.search(match.group(2)):
                return f"<{match.group(1)}{match.group(3) or ''}>{MASK}</{match.group(1)}>"
            return match.group(0)

        value = _XML_ELEMENT.sub(mask_element, value)
        for secret in self._known(extra):
            value = value.replace(secret, MASK)
        return value

    def value(self, value: Any, extra: Iterable[str] = ()) -> Any:
        extra = list(extra)
        if isinstance(value, Mapping):
            return {
                key: (MASK if SENSITIVE_NAME.search(str(key)) and item not in (None, "") else self.value(item, extra))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.value(item, extra) for item in value]
        if isinstance(value, str):
            return self.text(value, extra)
        return value
