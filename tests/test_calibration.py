"""Calibration formats and the errors that must come before any gradient work."""

from __future__ import annotations

import json

import pytest

from mergekit_fw.cli import toy
from mergekit_fw.data.calibration import load_calibration
from mergekit_fw.fw.objectives import IGNORE_INDEX
from mergekit_fw.settings import FWConfigError


@pytest.fixture(scope="module")
def tok():
    return toy.build_tokenizer()


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_text_records_take_loss_on_every_token(tmp_path, tok):
    calib = load_calibration(write(tmp_path / "t.jsonl", [{"text": "abc"}]), tok, 64)
    (sample,) = calib.tasks[0].samples
    assert sample.input_ids == [1] + tok("abc", add_special_tokens=False)["input_ids"]
    assert sample.labels == sample.input_ids and sample.n_targets == 3


def test_prompt_response_masks_the_prompt(tmp_path, tok):
    calib = load_calibration(
        write(tmp_path / "p.jsonl", [{"prompt": "ab>", "response": "ba"}]), tok, 64
    )
    (sample,) = calib.tasks[0].samples
    assert sample.labels[:4] == [IGNORE_INDEX] * 4  # <s> a b >
    assert sample.labels[4:] == tok("ba", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert sample.n_targets == 3


def test_messages_use_the_chat_template_and_train_on_the_answer(tmp_path, tok):
    rows = [
        {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "ba"}]}
    ]
    (sample,) = load_calibration(write(tmp_path / "m.jsonl", rows), tok, 64).tasks[0].samples
    targets = [t for t in sample.labels if t != IGNORE_INDEX]
    assert tok.decode(targets) == "ba</s>"


def test_txt_lines_and_paragraphs(tmp_path, tok):
    lines = tmp_path / "lines.txt"
    lines.write_text("abc\ndef\n\nghi\n")
    assert len(load_calibration(str(lines), tok, 64).tasks[0].samples) == 2  # paragraphs
    flat = tmp_path / "flat.txt"
    flat.write_text("abc\ndef\nghi\n")
    assert len(load_calibration(str(flat), tok, 64).tasks[0].samples) == 3


def test_manifest_names_tasks_with_weights(tmp_path, tok):
    write(tmp_path / "a.jsonl", [{"text": "abc"}, {"text": "abd"}])
    write(tmp_path / "b.jsonl", [{"text": "xyz"}])
    (tmp_path / "m.yaml").write_text("tasks:\n  a: a.jsonl\n  b: {path: b.jsonl, weight: 2.0}\n")
    calib = load_calibration(str(tmp_path / "m.yaml"), tok, 64)
    assert [(t.name, t.weight, len(t.samples)) for t in calib.tasks] == [
        ("a", 1.0, 2),
        ("b", 2.0, 1),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"Calibration file not found: .*missing\.jsonl"),
        ("", r"is empty"),
        ('{"prompt": "abc", "response": ""}\n', r"missing\.jsonl line 1: no target tokens"),
        ('{"question": "abc"}\n', r"no usable fields \(found \['question'\]\)"),
        ('{"prompt": "abc"}\n', r"`prompt` and `response` must both be present"),
    ],
)
def test_bad_calibration_files(tmp_path, tok, content, message):
    path = tmp_path / "missing.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FWConfigError, match=message):
        load_calibration(str(path), tok, 64)


def test_truncation_that_removes_the_response_is_an_error(tmp_path, tok):
    path = write(tmp_path / "long.jsonl", [{"prompt": "a" * 40, "response": "b"}])
    with pytest.raises(FWConfigError, match="no target tokens.*max_length=16"):
        load_calibration(path, tok, 16)


def test_unknown_extension(tmp_path, tok):
    path = tmp_path / "data.xml"
    path.write_text("<a/>")
    with pytest.raises(FWConfigError, match="unknown extension '.xml'"):
        load_calibration(str(path), tok, 16)


def test_a_malformed_jsonl_line_is_named_1_based_with_its_start(tmp_path, tok):
    lines = [json.dumps({"prompt": f"{i}+1=", "response": str(i + 1)}) for i in range(20)]
    lines[10] = '{"prompt": "10+1=", "response":'  # line 11 of the file
    lines.insert(3, "")  # a blank line still counts as a line
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FWConfigError) as caught:
        load_calibration(str(path), tok, 64)
    message = str(caught.value)
    assert f"{path}, line 12: not valid JSON" in message
    assert '\'{"prompt": "10+1=", "response":\'' in message and "row" not in message


def test_record_problems_name_the_line(tmp_path, tok):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"text": "abc"}\n\n[1, 2]\n')
    with pytest.raises(FWConfigError, match=r"line 3: a JSON object per line is expected"):
        load_calibration(str(path), tok, 64)
    path.write_text('{"text": "abc"}\n{"question": "abc"}\n')
    with pytest.raises(FWConfigError, match=r"calib\.jsonl line 2: no usable fields"):
        load_calibration(str(path), tok, 64)


def test_json_lines_in_a_json_file_name_the_line(tmp_path, tok, capfd):
    path = tmp_path / "calib.json"
    path.write_text('{"text": "abc"}\n{"text": "abd"}\n{"text": \n')
    with pytest.raises(FWConfigError, match=r"calib\.json, line 3: not valid JSON"):
        load_calibration(str(path), tok, 64)
    assert "row" not in capfd.readouterr().err  # datasets' own 0-based log line is silenced
