"""Truncated or corrupt model files: one line naming the model and the file, from headers
and sizes alone, before any gradient work, from `check` and from a run."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mergekit_fw.fw.loop
from mergekit_fw.pool.integrity import safetensors_problem, weights_problems
from mergekit_fw.settings import FWConfigError
from tests.helpers import check, make_adapter, run_merge, write_recipe


@pytest.fixture
def no_gradients(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("gradient work started before the input was rejected")

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", refuse)


def good_file(path: Path) -> Path:
    save_file({"a": torch.ones(3, 4), "b": torch.zeros(5, dtype=torch.int64)}, str(path))
    return path


def copy_model(source: str, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_a_complete_file_has_no_problem(tmp_path):
    assert safetensors_problem(str(good_file(tmp_path / "m.safetensors"))) is None


def test_each_kind_of_damage_is_named(tmp_path):
    path = good_file(tmp_path / "m.safetensors")
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    cases = {
        "short": (data[:5], r"is truncated: 5 bytes"),
        "cut in the header": (data[: 8 + header_size // 2], r"announces a \d+-byte header"),
        "cut in the data": (data[:-7], r"is truncated: .* 7 missing"),
        "padded": (data + b"\0" * 3, r"has 3 bytes after its tensor data"),
        "not json": (data[:8] + b"{" * header_size + data[8 + header_size :], "not valid JSON"),
        "garbage length": (b"\xff" * 16, r"announces a"),
    }
    for name, (content, pattern) in cases.items():
        path.write_bytes(content)
        problem = safetensors_problem(str(path))
        assert problem is not None, name
        assert re.search(pattern, problem), (name, problem)


def test_shard_index_naming_a_missing_file(zoo, tmp_path):
    model = copy_model(zoo["add"], tmp_path / "sharded")
    names = list(json.loads(_header(model / "model.safetensors")))
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names if n != "__metadata__"}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    [(file, problem)] = weights_problems(str(model))
    assert file.endswith("model.safetensors.index.json")
    assert "names model-00002-of-00002.safetensors, which does not exist" in problem
    (model / "model.safetensors.index.json").write_text("{not json")
    [(file, problem)] = weights_problems(str(model))
    assert "is not a valid shard index" in problem


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + size]


def test_truncated_zip_checkpoint(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(64)}, str(path))
    assert weights_problems(str(tmp_path)) == []
    truncate(path, path.stat().st_size // 2)
    [(file, problem)] = weights_problems(str(tmp_path))
    assert file == str(path) and "is truncated" in problem


@pytest.mark.parametrize("role", ["model", "base_model"])
def test_a_run_names_the_broken_model_and_file(zoo, tmp_path, no_gradients, role):
    broken = copy_model(zoo["add"] if role == "model" else zoo["base"], tmp_path / "broken")
    truncate(broken / "model.safetensors", 50_000)
    base, models = (zoo["base"], [zoo["reverse"], str(broken)])
    if role == "base_model":
        base, models = str(broken), [zoo["reverse"], zoo["add"]]
    recipe = write_recipe(
        tmp_path / "r.yaml", base, models, calibration=f"{zoo['calib']}/add.jsonl", iterations=2
    )
    pattern = rf"^{role} {broken}: {broken}/model.safetensors is truncated: .* missing\)\. "
    with pytest.raises(FWConfigError, match=pattern) as caught:
        run_merge(recipe, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_check_and_the_stock_cli_print_one_line(zoo, tmp_path):
    broken = copy_model(zoo["count"], tmp_path / "count_copy")
    truncate(broken / "model.safetensors", 60_000)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"], str(broken)],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    bin_dir = Path(sys.executable).parent
    for command in (
        [str(bin_dir / "mergekit-fw"), "check", str(recipe)],
        [str(bin_dir / "mergekit-yaml"), str(recipe), str(tmp_path / "out")],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"model {broken}: {broken}/model.safetensors is truncated" in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_truncated_adapter_is_named(zoo, tmp_path):
    adapter = Path(make_adapter(zoo["base"], tmp_path / "lora", seed=1))
    weights = adapter / "adapter_model.safetensors"
    truncate(weights, weights.stat().st_size - 100)
    with pytest.raises(FWConfigError, match=rf"Adapter {adapter}: {weights} is truncated"):
        check(zoo, tmp_path, [str(adapter)])
