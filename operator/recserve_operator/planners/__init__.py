"""Pure planners: spec and context in, manifests or config out. No I/O, so exhaustively tested."""
