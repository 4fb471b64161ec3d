"""The agent's HTTP surface beside /metrics: the API (docs/API.md), the live log stream and the status page."""
