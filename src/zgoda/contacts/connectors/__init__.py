"""Connectors to the client's systems: signed form webhooks in, signed notifications out."""
