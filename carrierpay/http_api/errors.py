"""How a database error becomes an HTTP answer: the one table from SQLSTATE to status and CAMARA code.

The SQL API raises carrierpay's codes (docs/sql-api.md); the HTTP API answers `{status, code,
message}` with CAMARA's codes. Every mapping lives in `BY_SQLSTATE`; a code missing from it is
a server error (500), never a guess.
"""

from __future__ import annotations

# SQLSTATE -> (HTTP status, CAMARA error code).
BY_SQLSTATE: dict[str, tuple[int, str]] = {
    "CP001": (403, "PERMISSION_DENIED"),                    # the token's merchant no longer exists
    "CP002": (403, "PERMISSION_DENIED"),
    "CP003": (400, "INVALID_ARGUMENT"),                     # unknown product
    "CP004": (404, "IDENTIFIER_NOT_FOUND"),                 # no carrier serves the number
    "CP005": (400, "INVALID_ARGUMENT"),                     # malformed phone number
    "CP006": (400, "INVALID_ARGUMENT"),
    "CP007": (422, "CARRIER_BILLING.UNAUTHORIZED_AMOUNT"),  # no price point for this amount
    "CP008": (400, "INVALID_ARGUMENT"),                     # currency unknown or not authorized
    "CP010": (400, "INVALID_ARGUMENT"),                     # clientCorrelator reused with another request
    "CP020": (422, "CARRIER_BILLING.UNAUTHORIZED_AMOUNT"),
    "CP021": (422, "CARRIER_BILLING.USER_AMOUNT_THRESHOLD_OVERPASSED"),
    "CP022": (422, "CARRIER_BILLING.USER_AMOUNT_THRESHOLD_OVERPASSED"),
    "CP023": (403, "CARRIER_BILLING.PAYMENT_DENIED"),       # outside charging hours
    "CP024": (403, "CARRIER_BILLING.PAYMENT_DENIED"),       # the regulation wants an opt-in first
    "CP030": (404, "NOT_FOUND"),
    "CP031": (400, "CARRIER_BILLING.INVALID_CODE"),
    "CP032": (400, "CARRIER_BILLING.VALIDATION_FAILED"),
    "CP033": (400, "CARRIER_BILLING.VALIDATION_FAILED"),
    "CP034": (409, "ALREADY_EXISTS"),
    "CP035": (429, "TOO_MANY_REQUESTS"),
    "CP036": (429, "TOO_MANY_REQUESTS"),
    "CP037": (429, "TOO_MANY_REQUESTS"),
    "CP038": (429, "TOO_MANY_REQUESTS"),
    "CP039": (409, "INCOMPATIBLE_STATE"),
    "CP040": (404, "NOT_FOUND"),                            # also another merchant's payment
    "CP041": (422, "CARRIER_BILLING_REFUND.UNAUTHORIZED_AMOUNT"),         # more than still refundable
    "CP042": (403, "CARRIER_BILLING_REFUND.PAYMENT_NOT_ELIGIBLE_FOR_REFUND"),  # refund window closed
    "CP043": (422, "CARRIER_BILLING_REFUND.INVALID_PAYMENT_STATUS"),      # not collected, or fully refunded
    "CP050": (404, "NOT_FOUND"),
    "CP051": (409, "INCOMPATIBLE_STATE"),
    "CP052": (400, "INVALID_ARGUMENT"),
    "CP063": (400, "INVALID_SINK"),                         # a sink the dispatcher may not post to
    "CP064": (400, "INVALID_SINK"),
    "CP070": (422, "SERVICE_NOT_APPLICABLE"),
    "CP071": (422, "SERVICE_NOT_APPLICABLE"),
    "CP080": (400, "INVALID_ARGUMENT"),
    "CP110": (401, "UNAUTHENTICATED"),
    "CP111": (401, "UNAUTHENTICATED"),
    "CP112": (403, "PERMISSION_DENIED"),
    "CP113": (400, "INVALID_ARGUMENT"),
    "CP114": (409, "ALREADY_EXISTS"),
    "CP115": (400, "INVALID_ARGUMENT"),
    "CP117": (400, "INVALID_ARGUMENT"),
    "CP118": (422, "MISSING_IDENTIFIER"),
    "CP119": (400, "CARRIER_BILLING.INVALID_DATE_RANGE"),
    "CP120": (400, "OUT_OF_RANGE"),
    "CP121": (400, "CARRIER_BILLING_REFUND.INVALID_DATE_RANGE"),
    "CP122": (400, "CARRIER_BILLING.INVALID_AUTHORIZATION_ID"),
    "CP123": (409, "ALREADY_EXISTS"),                       # already validated
    "CP124": (409, "CARRIER_BILLING.PAYMENT_CONFIRMED"),
    "CP125": (409, "CARRIER_BILLING.PAYMENT_CANCELLED"),
    "CP126": (403, "CARRIER_BILLING.PAYMENT_DENIED"),       # confirmed before its validation code
}

# PostgreSQL's own classes a request can reach with bad input (a string with NUL, a number beyond
# numeric's range): the request is wrong, not the server.
BY_SQLSTATE_CLASS: dict[str, tuple[int, str]] = {
    "22": (400, "INVALID_ARGUMENT"),
}

# Our own answers that do not come from the database, in the same words.
UNAUTHENTICATED = (401, "UNAUTHENTICATED")
INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
NOT_FOUND = (404, "NOT_FOUND")
INTERNAL = (500, "INTERNAL")
UNAVAILABLE = (503, "UNAVAILABLE")

MESSAGES = {
    401: "Request not authenticated due to missing, invalid, or expired credentials.",
    500: "The server could not answer; nothing is known to have been done. Retry with the same clientCorrelator.",
    503: "The service is unavailable; retry with the same clientCorrelator.",
}


def for_sqlstate(sqlstate: str | None) -> tuple[int, str]:
    """The HTTP status and CAMARA code for a database error."""
    code = sqlstate or ""
    if code in BY_SQLSTATE:
        return BY_SQLSTATE[code]
    return BY_SQLSTATE_CLASS.get(code[:2], INTERNAL)
