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
    exec(
        compile(block.replace("../shared/data", str(README.parents[1] / "shared" / "data")), "README.md", "exec"),
        namespace,
    )
    # Every file the example names is there afterwards, complete: pictures are PNGs and model
    # files load.
    import aekit

    for name in WRITTEN.findall(block):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"the example names {name} but did not write it"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        elif name.endswith(".aekit"):
            assert aekit.load(path).num_params > 0


WRITTEN = re.compile(r"""["']([\w.-]+\.(?:png|aekit|npy|csv))["']""")


def test_readme_examples_write_pictures_and_models():
    # The examples above check their files; this keeps them from quietly dropping all of them.
    named = {name for block in BLOCKS for name in WRITTEN.findall(block)}
    assert {"model.aekit", "features.png", "reconstructions.png"} <= named
