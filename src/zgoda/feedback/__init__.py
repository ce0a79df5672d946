"""Feedback: what comes back after a message leaves (bounces, complaints, unsubscribes, provider events)."""
