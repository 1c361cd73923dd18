"""Masking secrets and personal data before a document leaves the transactional database.

The history store is read by more people, kept longer and copied further than the payment
database, so it must never receive a credential, a PIN or a full phone number. Redaction works
on keys (any JSON member whose name says it is secret) and inside strings (Bearer/Basic
credentials, `password=` in query strings, `"token": "…"` in JSON or `<spPassword>` in XML kept
as text, "PIN is 1234" or "PIN for X is 123456" in SMS bodies), so that a carrier response stored as raw text is covered
too. Adapters already redact what they log; this is the second, independent line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MASK = "[REDACTED]"

# Compared after lower-casing and dropping separators, so spPassword, sp_password and
# SP-PASSWORD are one name. A key also counts as secret when one of its words is in SECRET_WORDS.
DEFAULT_SECRET_KEYS = frozenset({
    "pin", "pincode", "otp", "password", "passwd", "pwd", "sppassword", "secret", "clientsecret",
    "token", "accesstoken", "refreshtoken", "idtoken", "authorization", "proxyauthorization",
    "apikey", "xapikey", "cookie", "setcookie", "privatekey", "signature", "sig", "hmac",
    "passcode", "cvv", "systempassword",
})
SECRET_WORDS = frozenset({
    "pin", "otp", "password", "passwd", "secret", "token", "authorization", "passcode", "signature", "credentials",
})

# Personal fields: kept recognisable for support (country and operator prefix, last digits).
DEFAULT_PERSONAL_KEYS = frozenset({
    "msisdn", "enduserid", "phone", "phonenumber", "sourceaddr", "destinationaddr", "senderaddress",
    "address", "to", "from",
})

_WORD_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_E164 = re.compile(r"(?:(?<=\+)|(?<=%2B)|(?<=%2b)|(?<=tel:))(\d{7,15})(?!\d)")
_CREDENTIAL_SCHEMES = re.compile(r"\b(Bearer|Basic|Digest|Token|HMAC|WSSE)\s+[A-Za-z0-9._~+/=\-:,\"]{4,}", re.I)
_PIN_WORDS = (
    r"\b(PIN(?:[ -]?code|[ -]?number)?|OTP|passcode|password|one[- ]time (?:code|password)"
    r"|verification code|confirmation code|security code)"
)
# "PIN is x", "PIN: x", "password=x": whatever follows. "PIN 1234": only a token with a digit.
# "PIN for Gems (purchase) is 123456": digits after "is" later in the same sentence.
_PIN_IN_TEXT = (
    re.compile(_PIN_WORDS + r"(\s+is\b\s*[:=]?\s*|\s*[:=]\s*)([^\s,;&<>\"'\[\]]{0,63}[^\s,;&<>\"'\[\].])", re.I),
    re.compile(_PIN_WORDS + r"(\s+)((?=[A-Za-z]*\d)[A-Za-z0-9]{3,12})\b", re.I),
    re.compile(_PIN_WORDS + r"(\s+(?:for|of|from)\b[^.\n]{0,80}?\sis\s*[:=]?\s*)(\d{3,12})(?!\d)", re.I),
)
# Every pattern above needs one of these to match; most values (statuses, timestamps, ids) have none.
_MAYBE_SENSITIVE = re.compile(r'[\s"<=]|\d{7}|' + _PIN_WORDS, re.I)
_KEY_CACHE_LIMIT = 10_000


def normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _words(key: str) -> set[str]:
    return {w.lower() for w in _WORD_SPLIT.split(key) if w}


def mask_msisdn(digits_or_number: str) -> str:
    """+447700900123 → +4477****123: country and operator prefix and last three digits stay."""
    def mask(match: re.Match) -> str:
        digits = match.group(1) if match.lastindex else match.group(0)
        return digits[:4] + "****" + digits[-3:]

    if _E164.search(digits_or_number):
        return _E164.sub(mask, digits_or_number)
    digits = re.sub(r"\D", "", digits_or_number)
    if len(digits) >= 7:
        return re.sub(r"\d{7,15}", mask, digits_or_number)
    return digits_or_number


@dataclass(frozen=True)
class Redactor:
    """Applies one redaction policy to any JSON-like value, recursively; never mutates its input."""

    secret_keys: frozenset[str] = DEFAULT_SECRET_KEYS
    personal_keys: frozenset[str] = DEFAULT_PERSONAL_KEYS
    mask_numbers_in_text: bool = True
    _text_patterns: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)
    _key_kinds: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Secret key names as they appear inside text: query strings, JSON text, XML elements.
        names = "|".join(_spelling_pattern(k) for k in sorted(self.secret_keys, key=len, reverse=True))
        patterns = (
            re.compile(rf'("(?:{names})"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.I),
            re.compile(rf"(<(?:\w+:)?(?:{names})\b[^>]*>)([^<]*)(</)", re.I),
            re.compile(rf"(\b(?:{names})=)([^&\s\"'<>]+)()", re.I),
        )
        object.__setattr__(self, "_text_patterns", patterns)
        # Documents repeat a few dozen key names millions of times: classify each name once.
        object.__setattr__(self, "_key_kinds", {})

    @classmethod
    def from_env(cls, environ: dict | None = None) -> Redactor:
        """Policy from the environment (comma-separated key names).

        CARRIERPAY_HISTORY_REDACT_KEYS adds secret keys to the defaults;
        CARRIERPAY_HISTORY_PERSONAL_FIELDS replaces the list of personal fields.
        """
        env = os.environ if environ is None else environ
        secret = set(DEFAULT_SECRET_KEYS) | set(_split(env.get("CARRIERPAY_HISTORY_REDACT_KEYS", "")))
        personal_env = env.get("CARRIERPAY_HISTORY_PERSONAL_FIELDS")
        personal = set(_split(personal_env)) if personal_env is not None else set(DEFAULT_PERSONAL_KEYS)
        return cls(secret_keys=frozenset(secret), personal_keys=frozenset(personal))

    # -- keys -------------------------------------------------------------------------------
    def is_secret_key(self, key: str) -> bool:
        return normalise_key(key) in self.secret_keys or bool(_words(key) & SECRET_WORDS)

    def is_personal_key(self, key: str) -> bool:
        return normalise_key(key) in self.personal_keys

    # -- values -----------------------------------------------------------------------------
    def __call__(self, value):
        return self.redact(value)

    def _key_kind(self, key: str) -> str:
        kind = self._key_kinds.get(key)
        if kind is None:
            kind = "secret" if self.is_secret_key(key) else "personal" if self.is_personal_key(key) else ""
            if len(self._key_kinds) >= _KEY_CACHE_LIMIT:
                self._key_kinds.clear()
            self._key_kinds[key] = kind
        return kind

    def redact(self, value, key: str | None = None):
        kind = self._key_kind(key) if key is not None else ""
        if kind == "secret":
            return None if value is None else MASK
        if kind == "personal":
            return self._personal(value)
        if isinstance(value, dict):
            return {k: self.redact(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            # Headers are often kept as [name, value] pairs rather than an object.
            if len(value) == 2 and isinstance(value[0], str) and not isinstance(value[1], (dict, list)):
                return [value[0], self.redact(value[1], value[0])]
            return [self.redact(item) for item in value]
        if isinstance(value, str):
            return self.redact_text(value)
        return value

    def _personal(self, value):
        if isinstance(value, str):
            return mask_msisdn(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return mask_msisdn(str(value))
        if isinstance(value, (dict, list, tuple)):
            return self.redact(value)
        return value

    def redact_text(self, text: str) -> str:
        if not _MAYBE_SENSITIVE.search(text):
            return text
        text = _CREDENTIAL_SCHEMES.sub(lambda m: f"{m.group(1)} {MASK}", text)
        for pattern in self._text_patterns:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
        for pattern in _PIN_IN_TEXT:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        if self.mask_numbers_in_text:
            text = _E164.sub(lambda m: m.group(1)[:4] + "****" + m.group(1)[-3:], text)
        return text


def _split(value: str) -> Iterable[str]:
    return (normalise_key(part) for part in value.split(",") if part.strip())


def _spelling_pattern(key: str) -> str:
    """A normalised key as written in text: clientsecret matches client_secret, clientSecret, client-secret."""
    return "[-_.]?".join(re.escape(ch) for ch in key)


DEFAULT = Redactor()
