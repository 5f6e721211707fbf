"""Woo Companion's shared package: event contracts, loss-free messaging, storage, config.

Importing this package has no side effects; every connection is made by an explicit call.
"""
