"""History: the outbox shipper, the history stores (PostgreSQL, MongoDB), timelines and retention."""
