"""Everything that sends data out of the agent: the Prometheus endpoint and (later) log routes."""
