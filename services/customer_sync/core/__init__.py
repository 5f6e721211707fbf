"""Customers and orders themselves: WooCommerce data normalised, changes applied and the events
they owe, the read side, staff edits, imports and store registration."""
