"""`make readme-tables` and the Makefile's TORCH_INDEX: the README's set-up promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mergekit_fw.cli.readme_tables import BEGIN, END, update

ROOT = Path(__file__).resolve().parents[1]


def test_update_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    tables = tmp_path / "t.md"
    tables.write_text("| model | add |\n|---|---|\n| base | 1.0 |\n")
    assert update(readme, tables)
    assert (
        readme.read_text()
        == f"intro\n{BEGIN}\n| model | add |\n|---|---|\n| base | 1.0 |\n{END}\noutro\n"
    )
    assert not update(readme, tables)  # idempotent


def test_the_readme_has_one_marked_block():
    """What `make readme-tables` writes into."""
    text = (ROOT / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_torch_index_reaches_pip(tmp_path):
    command = ["make", "-n", "-B", "install", f"VENV={tmp_path}/v"]
    plain = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--index-url" not in plain
    url = "https://download.pytorch.org/whl/cpu"
    cpu = subprocess.run(
        [*command, f"TORCH_INDEX={url}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f"pip install -q torch==2.13.0 --index-url {url}" in cpu
