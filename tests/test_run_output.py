"""What a run prints when stderr is a log file: one line per pass, `FW t=` lines flush left,
and no deprecation warnings from mergekit-fw's own calls."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions

from mergekit_fw.fw import progress as progress_module
from mergekit_fw.fw.progress import progress
from tests.helpers import write_recipe

PACKAGE = str(Path(progress_module.__file__).parents[1])


def test_progress_modes(monkeypatch, capsys):
    monkeypatch.delenv("MERGEKIT_FW_PROGRESS", raising=False)
    assert progress_module.mode() == "lines"  # pytest's captured stderr is not a TTY
    assert list(progress(range(3), "gradient t=0")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert err.startswith("  gradient t=0: 3/3 in ") and err.count("\n") == 1 and "\r" not in err
    assert list(progress(range(3), "LMO", quiet=True)) == [0, 1, 2]
    monkeypatch.setenv("MERGEKIT_FW_PROGRESS", "off")
    list(progress(range(3), "LMO"))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MERGEKIT_FW_PROGRESS", "bars")
    assert progress_module.mode() == "bars"


def test_a_logged_run_has_one_line_per_pass_and_no_deprecations(zoo, tmp_path, monkeypatch, capfd):
    from mergekit.merge import run_merge  # the wrapped one, as mergekit-yaml calls it

    monkeypatch.delenv("MERGEKIT_FW_PROGRESS", raising=False)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["reverse"], zoo["add"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=2, line_search_evals=3, init="base",
    )  # fmt: skip
    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_merge(config, str(tmp_path / "out"), MergeOptions(quiet=False))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    ours = [
        f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if w.filename.startswith(PACKAGE)
    ]
    assert ours == []  # no warning of any kind raised from mergekit_fw's own frames
    assert not [m for m in logged if "deprecated" in m.lower()], logged
    err = capfd.readouterr().err
    assert "deprecated" not in err.lower()
    lines = err.replace("\r", "\n").splitlines()
    fw_lines = [line for line in lines if line.startswith("FW t=")]
    assert [line.split(":")[0] for line in fw_lines] == ["FW t=0", "FW t=1"]
    passes = [line for line in lines if line.startswith("  ")]
    assert any(line.startswith("  gradient t=0: ") for line in passes)
    assert any(line.startswith("  LMO: 21/21 in ") for line in passes)
    assert not [line for line in lines if "it/s]" in line and "LMO" in line]  # no tqdm bars
    assert not [line for line in lines if line.startswith("Loading weights")]  # transformers
    assert (tmp_path / "out" / "fw_plan.json").exists()


@pytest.mark.parametrize("stream_isatty", [True])
def test_bars_on_a_terminal(monkeypatch, stream_isatty):
    class Terminal:
        def isatty(self) -> bool:
            return stream_isatty

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.delenv("MERGEKIT_FW_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress_module.mode() == "bars"
    bar = progress(range(2), "LMO")
    assert type(bar).__name__ != "generator"  # a tqdm bar
    assert list(bar) == [0, 1]
