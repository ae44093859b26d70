"""The orders service: orders, their saga through stock and payment, and fulfilment."""
