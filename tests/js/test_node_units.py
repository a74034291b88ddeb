"""Runs the node:test unit tests of the pure web modules (PCM codecs, chunker, duplex metrics, i18n).

Skips when node is not installed: the pages themselves are covered by tests/browser.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_web_modules_node_unit_tests() -> None:
    files = sorted(str(p) for p in HERE.glob("*.test.mjs"))
    assert files
    proc = subprocess.run(["node", "--test", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
