"""carrierpay's SQLSTATEs (raised by cp.fail in db/procedures) mapped to Python exceptions, in one place.

The table of codes and meanings lives in docs/sql-api.md; Python holds no business rule, only
names for the codes so callers can catch them.
"""

from __future__ import annotations

import psycopg


class MigrationError(RuntimeError):
    """A migration failed; the database was left as it was before the run."""


class CarrierpayError(Exception):
    """An error raised by carrierpay's SQL API, with its stable code."""

    code = "CP000"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


def _kind(name: str, code: str) -> type[CarrierpayError]:
    return type(name, (CarrierpayError,), {"code": code, "__doc__": f"SQLSTATE {code}"})


UnknownMerchant = _kind("UnknownMerchant", "CP001")
MerchantForbidden = _kind("MerchantForbidden", "CP002")
UnknownProduct = _kind("UnknownProduct", "CP003")
UnknownCarrierForNumber = _kind("UnknownCarrierForNumber", "CP004")
MalformedMsisdn = _kind("MalformedMsisdn", "CP005")
InvalidAmount = _kind("InvalidAmount", "CP006")
NoPricePoint = _kind("NoPricePoint", "CP007")
CurrencyMismatch = _kind("CurrencyMismatch", "CP008")
IdempotencyConflict = _kind("IdempotencyConflict", "CP010")
TransactionCapExceeded = _kind("TransactionCapExceeded", "CP020")
DailyCapExceeded = _kind("DailyCapExceeded", "CP021")
MonthlyCapExceeded = _kind("MonthlyCapExceeded", "CP022")
OutsideChargingHours = _kind("OutsideChargingHours", "CP023")
OptinRequired = _kind("OptinRequired", "CP024")
OptinNotFound = _kind("OptinNotFound", "CP030")
WrongPin = _kind("WrongPin", "CP031")
PinExpired = _kind("PinExpired", "CP032")
TooManyPinAttempts = _kind("TooManyPinAttempts", "CP033")
OptinAlreadyConfirmed = _kind("OptinAlreadyConfirmed", "CP034")
TooManyPinRequests = _kind("TooManyPinRequests", "CP035")
MerchantPinBudgetSpent = _kind("MerchantPinBudgetSpent", "CP036")
NumberLockedForWrongPins = _kind("NumberLockedForWrongPins", "CP037")
MerchantLockedForWrongPins = _kind("MerchantLockedForWrongPins", "CP038")
PinNotSentYet = _kind("PinNotSentYet", "CP039")
PaymentNotFound = _kind("PaymentNotFound", "CP040")
RefundExceedsCollected = _kind("RefundExceedsCollected", "CP041")
RefundWindowClosed = _kind("RefundWindowClosed", "CP042")
PaymentNotRefundable = _kind("PaymentNotRefundable", "CP043")
SubscriptionNotFound = _kind("SubscriptionNotFound", "CP050")
SubscriptionAlreadyCancelled = _kind("SubscriptionAlreadyCancelled", "CP051")
PlanNotOffered = _kind("PlanNotOffered", "CP052")
IllegalTransition = _kind("IllegalTransition", "CP060")
LedgerUnbalanced = _kind("LedgerUnbalanced", "CP061")
LedgerImmutable = _kind("LedgerImmutable", "CP062")
BadWebhookUrl = _kind("BadWebhookUrl", "CP063")
WebhookHttpNotAllowed = _kind("WebhookHttpNotAllowed", "CP064")
JournalTooFewEntries = _kind("JournalTooFewEntries", "CP065")
JournalClosed = _kind("JournalClosed", "CP066")
JournalCurrencyMismatch = _kind("JournalCurrencyMismatch", "CP067")
ProcedureNotBornPending = _kind("ProcedureNotBornPending", "CP068")
ConsentImmutable = _kind("ConsentImmutable", "CP069")
CarrierUnavailable = _kind("CarrierUnavailable", "CP070")
OperationNotOffered = _kind("OperationNotOffered", "CP071")
UnknownCall = _kind("UnknownCall", "CP072")
BadCallback = _kind("BadCallback", "CP073")
InvalidArgument = _kind("InvalidArgument", "CP080")
MerchantRoleNotOurs = _kind("MerchantRoleNotOurs", "CP085")
InvalidCarrierSpec = _kind("InvalidCarrierSpec", "CP090")
CallNotUnsettled = _kind("CallNotUnsettled", "CP091")
SmsTemplateMissing = _kind("SmsTemplateMissing", "CP100")
InvalidClientCredentials = _kind("InvalidClientCredentials", "CP110")
InvalidAccessToken = _kind("InvalidAccessToken", "CP111")
ScopeNotGranted = _kind("ScopeNotGranted", "CP112")
InexactAmount = _kind("InexactAmount", "CP113")
DuplicateReferenceCode = _kind("DuplicateReferenceCode", "CP114")
NoProductForPayment = _kind("NoProductForPayment", "CP115")
UnknownApiClient = _kind("UnknownApiClient", "CP116")
UnknownScope = _kind("UnknownScope", "CP117")
PhoneNumberRequired = _kind("PhoneNumberRequired", "CP118")
InvalidDateRange = _kind("InvalidDateRange", "CP119")
PageOutOfRange = _kind("PageOutOfRange", "CP120")
InvalidRefundDateRange = _kind("InvalidRefundDateRange", "CP121")
InvalidAuthorizationId = _kind("InvalidAuthorizationId", "CP122")
PaymentAlreadyValidated = _kind("PaymentAlreadyValidated", "CP123")
PaymentAlreadyConfirmed = _kind("PaymentAlreadyConfirmed", "CP124")
PaymentCancelled = _kind("PaymentCancelled", "CP125")
PaymentAwaitsValidation = _kind("PaymentAwaitsValidation", "CP126")
BadRateLimit = _kind("BadRateLimit", "CP127")
UnknownPauseTarget = _kind("UnknownPauseTarget", "CP130")
BadBreakerSetting = _kind("BadBreakerSetting", "CP131")
SmsPurchaseNeedsOptin = _kind("SmsPurchaseNeedsOptin", "CP140")
UnknownTimeZone = _kind("UnknownTimeZone", "CP141")
BadLanguage = _kind("BadLanguage", "CP142")
NotACustomer = _kind("NotACustomer", "CP143")
RowNeverDeleted = _kind("RowNeverDeleted", "CP150")
IdOfNoPartition = _kind("IdOfNoPartition", "CP160")
BadClusterMap = _kind("BadClusterMap", "CP161")
PartitionUnreachable = _kind("PartitionUnreachable", "CP162")

BY_CODE: dict[str, type[CarrierpayError]] = {
    cls.code: cls for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, CarrierpayError) and cls is not CarrierpayError
}


def translate(exc: psycopg.Error) -> Exception:
    """The carrierpay exception for a database error carrying one of our codes, else the error itself."""
    code = getattr(exc, "sqlstate", None) or ""
    cls = BY_CODE.get(code)
    if cls is None:
        return exc
    message = exc.diag.message_primary if exc.diag and exc.diag.message_primary else str(exc)
    return cls(message, code)
