"""Shared helpers for Lookout's tests: Docker (daemon, image, network, containers), the agent process,
/metrics scraping and parsing, polling, and a real Prometheus server.

``tests.helpers.docker`` uses only the standard library so ``.ci/run`` can call it before the test
dependencies exist: ``python -m tests.helpers.docker ensure-daemon ensure-image ensure-network``.
"""

from tests.helpers.wait import wait_for

__all__ = ["wait_for"]
