"""The result map: what a carrier's answer means for us (outcome + reason), first matching rule wins.

A rule's `when` is a conjunction. `http_status` matches the status line (an integer, "4xx", or a
list of either). Every other key names an extracted field and matches it by equality (compared as
text, so 0 and "0" agree), by any of a list, by `{regex: ...}` (search) or `{present: bool}`.

Safety rules no spec can override: an answer we could not read never means success, and only
rules that opt in with `match_unparsed: true` see such an answer at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

OUTCOMES = ("succeeded", "failed", "unknown", "pending")


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str | None
    rule: str  # which rule decided, for logs and for whoever debugs a spec

    def as_pair(self) -> tuple[str, str | None]:
        return self.outcome, self.reason


UNREADABLE = Decision("unknown", "unknown", "builtin: unreadable answer")
UNMATCHED = Decision("unknown", "unknown", "builtin: no rule matched")
THROTTLED = Decision("failed", "throttled", "builtin: HTTP 429")


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _status_matches(expected: Any, status: int | None) -> bool:
    if status is None:
        return False
    if isinstance(expected, list):
        return any(_status_matches(item, status) for item in expected)
    if isinstance(expected, str):
        return str(status)[0] == expected[0]
    return status == expected


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_matches(expected: Any, fields: Mapping[str, Any], name: str) -> bool:
    value = fields.get(name)
    if isinstance(expected, Mapping):
        if "present" in expected and (value is not None) != expected["present"]:
            return False
        if "regex" in expected:
            return value is not None and _regex(expected["regex"]).search(_text(value)) is not None
        return True
    if value is None:
        return False
    if isinstance(expected, list):
        return any(_text(value) == _text(item) for item in expected)
    return _text(value) == _text(expected)


def rule_matches(when: Mapping[str, Any], fields: Mapping[str, Any], http_status: int | None, readable: bool) -> bool:
    if not readable and not when.get("match_unparsed"):
        return False
    for name, expected in when.items():
        if name == "match_unparsed":
            continue
        if name == "http_status":
            if not _status_matches(expected, http_status):
                return False
        elif not _field_matches(expected, fields, name):
            return False
    return True


def decide(
    rule_sets: Iterable[tuple[str, list[Mapping[str, Any]]]],
    fields: Mapping[str, Any],
    *,
    http_status: int | None = None,
    readable: bool = True,
) -> Decision:
    """Try each (label, rules) list in order (step, operation, carrier-wide); then the built-ins."""
    for label, rules in rule_sets:
        for index, rule in enumerate(rules or []):
            if rule_matches(rule["when"], fields, http_status, readable):
                outcome = rule["outcome"]
                if outcome == "succeeded" and not readable:
                    return UNREADABLE
                reason = rule.get("reason")
                if outcome in ("failed",) and reason is None:
                    reason = "rejected"
                if outcome == "unknown" and reason is None:
                    reason = "unknown"
                if outcome in ("succeeded", "pending"):
                    reason = None
                return Decision(outcome, reason, f"{label}[{index}]")
    if http_status == 429:
        return THROTTLED
    return UNMATCHED if readable else UNREADABLE
