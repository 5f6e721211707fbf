"""Benchmarks of Woo Companion's services (`make bench-webhooks`)."""
