"""Campaigns: templates, the send gate and sending."""
