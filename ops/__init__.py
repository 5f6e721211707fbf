"""Operator tools: the `companion` CLI, health checks, broker users and topology, and the
generators of docs/. They may import the services; shared/ and the services never import them.
"""
