"""The analytics service: a store of facts from every event, rolled up into reports."""
