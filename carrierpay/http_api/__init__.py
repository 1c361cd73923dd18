"""The merchant HTTP API: CAMARA Carrier Billing over the SQL API (`carrierpay api serve`)."""
