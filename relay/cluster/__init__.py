"""Shared state of a relay cluster: several processes, one Redis."""
