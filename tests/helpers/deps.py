"""Missing outside dependencies (Docker, Prometheus, rsyslog, ...): skip locally, fail in CI.

``.ci/run`` installs everything and exports ``LOOKOUT_TEST_STRICT=1``; then a dependency that is
still missing is a broken CI machine, and the suite must not go green by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

STRICT = os.environ.get("LOOKOUT_TEST_STRICT", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """``pytest.skip(reason)``, or ``pytest.fail`` with the same reason under LOOKOUT_TEST_STRICT=1."""
    if STRICT:
        pytest.fail(f"{reason} (LOOKOUT_TEST_STRICT=1: missing dependencies fail instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)
