"""FWConfigError is a plain exception; the command lines present it as click's `Error: ...`."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mergekit_fw.mergekit.errors import PresentedError, PresentingGroup, presented
from mergekit_fw.settings import FWConfigError


class Special(FWConfigError):
    pass


def test_the_error_is_plain_and_presented_as_a_click_error_inside_click_only():
    assert not issubclass(FWConfigError, click.ClickException)
    with pytest.raises(Special), presented():  # a Python caller: the error as it was
        raise Special("kept")
    with click.Context(click.Command("x")), pytest.raises(PresentedError) as caught, presented():
        raise Special("parameters.iterations: must be at least 1")
    assert isinstance(caught.value, FWConfigError) and caught.value.message.startswith("param")
    assert caught.value.format_message() == "parameters.iterations: must be at least 1"


def test_a_command_of_the_group_prints_one_error_line():
    @click.group(cls=PresentingGroup)
    def cli() -> None:
        pass

    @cli.command()
    def fail() -> None:
        raise FWConfigError("bad recipe")

    result = CliRunner().invoke(cli, ["fail"])
    assert result.exit_code == 1 and result.output == "Error: bad recipe\n"
