"""Lookout: a host agent that serves cAdvisor-compatible container metrics and ships container logs."""

__version__ = "0.1.0"
