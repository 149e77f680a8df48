"""Every ```python block in README.md runs, in order, in a fresh folder.

Blocks share one namespace per block; a block that reads ../shared/data is
skipped when that folder is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _title(block: str) -> str:
    first = next((line for line in block.splitlines() if line.strip()), "")
    return first.strip()[:40]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{i}:{_title(b)}" for i, b in enumerate(BLOCKS)])
def test_readme_example_runs(block, tmp_path, monkeypatch):
    if "shared/data" in block and not (README.parents[1] / "shared" / "data").exists():
        pytest.skip("the example reads ../shared/data, which is absent")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(block.replace("../shared/data", str(README.parents[1] / "shared" / "data")),
                 "README.md", "exec"), namespace)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
