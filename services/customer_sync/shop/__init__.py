"""The shop side: the WooCommerce REST client and what is done through it (backfill,
reconciliation, webhook registration, coupons written for other services)."""
