"""Golden /metrics output for fixture trees (tests/fixtures/golden/*.prom).

The rendered text is compared byte for byte after masking what cannot be reproduced: the scrape
time (``container_last_seen``), statvfs of the test machine's filesystem (the root cgroup's
``container_fs_*``) and Lookout's own version. Masked values become ``NaN``, so golden files stay
valid exposition. Regenerate with ``LOOKOUT_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden.py``
and review the diff against cadvisor.md before committing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.support import run_tree

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
TREES = ("v1_docker_cgroupfs", "v2_docker_systemd")
UPDATE = os.environ.get("LOOKOUT_UPDATE_GOLDEN", "") not in ("", "0")

_LAST_SEEN = re.compile(r"^(container_last_seen\{.*\}) \S+$", re.M)
_ROOT_FS = re.compile(r'^(container_fs_(?:inodes_free|inodes_total|limit_bytes|usage_bytes)\{id="/",.*\}) \S+$', re.M)
_VERSION = re.compile(r'cadvisorVersion="[^"]*"')


def mask(text: str) -> str:
    text = _LAST_SEEN.sub(r"\1 NaN", text)
    text = _ROOT_FS.sub(r"\1 NaN", text)
    return _VERSION.sub('cadvisorVersion="<version>"', text)


@pytest.mark.parametrize("name", TREES)
def test_golden(name: str, make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = mask(run_tree(make_tree(name), tmp=tmp_path).text)
    golden = GOLDEN / f"{name}.prom"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with LOOKOUT_UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if text != expected:  # show the first differing lines, not two 600-line blobs
        got, want = text.splitlines(), expected.splitlines()
        diff = [f"line {i + 1}:\n  got  {g}\n  want {w}" for i, (g, w) in enumerate(zip(got, want, strict=False))
                if g != w][:10]
        pytest.fail(f"{name}: output differs from {golden.name} ({len(got)} vs {len(want)} lines)\n"
                    + "\n".join(diff))


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.prom")), ids=lambda p: p.name)
def test_golden_files_are_valid_exposition(golden: Path) -> None:
    families = list(text_string_to_metric_families(golden.read_text()))
    names = {f.name for f in families}
    assert {"container_memory_working_set_bytes", "machine_cpu_cores", "cadvisor_version_info"} <= names
    # every family has exactly one TYPE line and no duplicate series
    text = golden.read_text()
    types = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(types) == len(set(types))
    lines = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(set(lines))


def test_golden_files_exist() -> None:
    assert {p.stem for p in GOLDEN.glob("*.prom")} >= set(TREES)
