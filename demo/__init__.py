"""A whole Woo Companion to look at without a shop: a simulated WooCommerce shop, a mail catcher
and an SMS stand-in beside every service (`python -m demo`, `make demo`; docs/demo.md).

The same stand-ins serve the tests, which drive them through the same public methods."""
