"""Every recipe fragment and command line the README and docs/ show, run as a user would
paste it (issue 23): each ```yaml block is validated with the checks `mergekit-fw check`
runs (recipe structure, the keys mergekit owns, the FW options, manifests), and every
`mergekit-fw` / `mergekit-yaml` command line is parsed by the command it names.

Fragments that name model folders (path/to/base, hub ids) cannot load models here; what is
checked is everything that does not need weights, which is what a pasted fragment breaks.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples" / "yaml").rglob("*.yaml"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:mergekit-fw|mergekit-yaml) [^`]*)`")
REQUIRED = {"calibration": "calib.jsonl", "iterations": 1}  # filled in for option fragments


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{doc.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def validate_fragment(text: str, where: str, tmp_path: Path) -> None:
    """What `mergekit-fw check` verifies before it needs any model file."""
    from mergekit.config import MergeConfiguration

    from mergekit_fw.data.calibration import Manifest
    from mergekit_fw.mergekit.checks import (
        METHOD_NAME,
        _structure,
        check_host_options,
        check_source,
        load_yaml_unique,
    )
    from mergekit_fw.pool.lora_files import read_manifest
    from mergekit_fw.settings import FWSettings

    document = load_yaml_unique(text, where)  # a key given twice is an error
    assert isinstance(document, dict), f"{where}: not a YAML mapping"
    if "merge_method" in document:  # a whole recipe
        check_source(text, where)
        config = MergeConfiguration.model_validate(document)
        if config.merge_method == METHOD_NAME:
            _structure(config)
            check_host_options(config)
            FWSettings.from_parameters(config.parameters)
    elif "tasks" in document:  # a calibration manifest
        Manifest.model_validate(document)
    elif "adapters" in document:  # a LoRA adapter manifest
        manifest = tmp_path / "adapters.yaml"
        manifest.write_text(text)
        read_manifest(str(manifest))
    elif set(document) == {"parameters"}:  # options to add to a recipe
        FWSettings.from_parameters({**REQUIRED, **document["parameters"]})
    else:
        raise AssertionError(f"{where}: a YAML block that is no recipe, manifest or options")


@pytest.mark.parametrize("where, text", _blocks("yaml"), ids=[w for w, _ in _blocks("yaml")])
def test_yaml_fragment_is_valid(where, text, tmp_path):
    validate_fragment(text, where, tmp_path)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_recipe_is_valid(path, tmp_path):
    validate_fragment(path.read_text(encoding="utf-8"), str(path), tmp_path)


def _command_lines() -> list[tuple[str, str]]:
    """Command lines of ```bash blocks (continuations joined, comments cut) and inline
    `mergekit-fw ...` / `mergekit-yaml ...` spans."""
    lines = []
    for where, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(("mergekit-fw ", "mergekit-yaml ")):
                lines.append((where, line))
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in INLINE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            where, found = f"{doc.relative_to(ROOT)}:{line}", match.group(1)
            if " / " in found:  # `mergekit-fw run / check / export`: several commands
                head, *rest = found.split(" / ")
                program = head.split()[0]
                lines += [(where, head)] + [(where, f"{program} {name}") for name in rest]
            else:
                lines.append((where, found))
    return lines


def _command(tokens: list[str]) -> tuple[click.Command, list[str], set[str]]:
    """The click command a line runs, its arguments, and the extra options it takes."""
    from mergekit.scripts.run_yaml import main as run_yaml

    from mergekit_fw.cli.main import main

    if tokens[0] == "mergekit-yaml":
        return run_yaml, tokens[1:], set()
    context = click.Context(main)
    names = main.list_commands(context)
    assert len(tokens) > 1 and tokens[1] in names, f"no such command: {tokens[1:2]}"
    return main.get_command(context, tokens[1]), tokens[2:], set()


def _options(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


@pytest.mark.parametrize("where, line", _command_lines(), ids=lambda v: v)
def test_command_line_parses(where, line):
    synopsis = "[" in line or "..." in line or "," in line.split("--")[0] and "=" not in line
    tokens = [t for t in shlex.split(line.replace("[", " ").replace("]", " ")) if t != "..."]
    command, args, extra = _command(tokens)
    known = _options(command) | extra
    for token in args:
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            assert name in known, f"{where}: `{line}`: {command.name} has no option {name}"
    for token in args:  # files of this repository that a line names must exist
        if token.startswith("examples/"):
            assert (ROOT / token).exists(), f"{where}: `{line}` names {token}, which is missing"
    positional = [a for a in args if not a.startswith("-")]
    if not synopsis and len(positional) >= _arity(command):
        plain = [a for a in args if a not in ("--no-resume",)]
        if "--plan" in plain:
            del plain[plain.index("--plan") : plain.index("--plan") + 2]
        command.make_context(command.name or "cmd", plain)  # raises on a bad line


def _arity(command: click.Command) -> int:
    return sum(1 for p in command.params if isinstance(p, click.Argument) and p.required)


def test_fragments_were_found():
    """The extraction itself: the README's recipe reference and its commands are in it."""
    assert len(_blocks("yaml")) >= 8
    assert any("mergekit-fw check" in line for _, line in _command_lines())


def test_the_authors_settings_fragments_need_the_hull():
    """The README's two "authors' settings" blocks carry `constraint: hull`; without it
    the default box refuses them, with a message that says what to add."""
    from mergekit_fw.settings import FWConfigError, FWSettings

    blocks = [t for _, t in _blocks("yaml") if re.search(r"^\s*lmo: cosine", t, re.M)]
    assert len(blocks) >= 2
    for text in blocks:
        options = yaml.safe_load(text)["parameters"]
        assert options["constraint"] == "hull"
        options.pop("constraint")
        with pytest.raises(FWConfigError, match="constraint: hull"):
            FWSettings.from_parameters({**REQUIRED, **options})


def test_the_readme_sample_log_lines_have_the_current_format():
    """The README's `FW t=` line and end-of-run summary are the run's current lines (the
    loss with its unit), not an older format."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    samples = [line for line in text.splitlines() if line.startswith("FW t=")]
    assert samples
    for line in samples:
        assert re.match(
            r"FW t=\d+: loss [\d.]+ nats/(sample|token)  gap \S+  gamma \S+  wins: ", line
        )
    assert re.search(r"^  calibration loss: [\d.]+ -> [\d.]+ nats/sample \(", text, re.M)
