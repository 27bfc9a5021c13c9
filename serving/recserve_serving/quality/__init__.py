"""The one evaluation protocol: a temporal split on the full catalog, every method on it."""
