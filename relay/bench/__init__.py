"""The benchmark: `ketang bench`."""
