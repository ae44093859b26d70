"""Shared, small and free of business rules: settings, persistence, events, HTTP, security."""
