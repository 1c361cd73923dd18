"""Phone numbers out of the daemons' log lines.

Logs are read by more people, kept longer and copied further than the payment database, and a log
line can carry a subscriber's number from anywhere: a connector's exception, a database error, a
carrier's payload quoted in a traceback. So the numbers are masked where lines are written, not
where they are made: every handler the daemons install formats through `MaskingFormatter`, which
keeps only the last four digits of each number it finds (tracebacks included), using the one
helper `mask_msisdn`.
"""

from __future__ import annotations

import logging
import re

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A number written as E.164 or a tel: URI ('+', '%2B' URL-encoded, 'tel:'), 7 to 15 digits, maybe
# grouped as people type them (+44 7700 900123); or a bare run of 10 to 15 digits (an SMPP address, a
# national number) that is not part of a longer token.
_NUMBER = re.compile(
    r"(?:\+|%2[Bb]|tel:\+?)\d(?:[ \-().]{0,2}\d){6,14}(?!\d)"
    r"|(?<![\w.+%:])\d{10,15}(?![\w.])"
)


def mask_msisdn(number: str) -> str:
    """+447700900123 → +***0123: only the last four digits are kept (and a leading + or tel:)."""
    text = str(number)
    prefix = re.match(r"\s*(\+|%2[Bb]|tel:\+?)?", text).group(0)
    digits = re.sub(r"\D", "", text[len(prefix):])
    return f"{prefix.strip()}***{digits[-4:]}"


def mask_msisdns(text: str) -> str:
    """Every phone number in a text masked by `mask_msisdn`."""
    return _NUMBER.sub(lambda match: mask_msisdn(match.group(0)), text)


class MaskingFormatter(logging.Formatter):
    """Formats a record (message, arguments and traceback alike), then masks the numbers in it."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_msisdns(super().format(record))


def configure_logging(level: int = logging.INFO, fmt: str = LOG_FORMAT) -> None:
    """The daemons' logging: `logging.basicConfig` (a stderr handler, unless the process already has
    one), with numbers masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
