"""Zgoda: consent-first, white-box marketing automation."""

__version__ = "0.1.0"
