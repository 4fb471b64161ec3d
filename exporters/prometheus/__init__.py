"""The Prometheus side: cAdvisor's metric table, a fast text/OpenMetrics renderer, and the HTTP app."""
