"""The composition root: which services run in which process, with which adapters."""
