"""The log path on the agent side: routes, batching, delivery with its retry policy, and the pipeline."""
