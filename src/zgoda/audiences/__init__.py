"""Audiences: static lists, saved segments, and who of them a campaign may reach."""
