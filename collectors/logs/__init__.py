"""Container log collection: paths provider, file identity, checkpoints, tailing and decoding."""
