"""A whole Woo Companion to look at without a shop: a simulated WooCommerce shop, a mail catcher
and an SMS stand-in beside every service (`python -m demo`, `make demo`; docs/demo.md).

The tests use the same stand-ins, with the faults they can inject."""
