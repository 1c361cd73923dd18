"""carrierpay: a direct-carrier-billing platform whose business logic lives in PostgreSQL."""

__version__ = "0.1.0"
