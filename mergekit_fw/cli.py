"""`mergekit-fw`: run, check and export Frank-Wolfe merges.

`run` is mergekit-yaml with the method registered explicitly, so it works in every install
mode (editable installs drop the .pth hook).
"""

from __future__ import annotations

import sys

import click
import yaml

import mergekit_fw  # noqa: F401  (registers the method and the run_merge wrapper)
from mergekit_fw.config import FWConfigError


def _load_config(path: str):
    from mergekit.config import MergeConfiguration

    try:
        with open(path, encoding="utf-8") as handle:
            return MergeConfiguration.model_validate(yaml.safe_load(handle))
    except FileNotFoundError:
        raise click.ClickException(f"No such recipe: {path}") from None
    except Exception as error:
        raise click.ClickException(f"{path} is not a valid mergekit recipe: {error}") from None


@click.group()
@click.version_option(mergekit_fw.__version__)
def main() -> None:
    """Frank-Wolfe Merging for mergekit."""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def run(ctx: click.Context) -> None:
    """mergekit-yaml CONFIG OUT [mergekit-yaml options], with frank_wolfe available."""
    import mergekit.merge  # noqa: F401  (installs the run_merge wrapper via the hook)
    from mergekit.scripts.run_yaml import main as run_yaml

    run_yaml.main(args=list(ctx.args), prog_name="mergekit-fw run")


@main.command()
@click.argument("config_file")
@click.option(
    "--calibration/--no-calibration",
    default=True,
    help="Also read and tokenize the calibration data.",
)
def check(config_file: str, calibration: bool) -> None:
    """Validate a frank_wolfe recipe without loading any model weights."""
    from mergekit_fw.validate import check_recipe

    config = _load_config(config_file)
    try:
        recipe = check_recipe(config, with_calibration=calibration)
    except FWConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"OK: {config_file}")
    click.echo(f"  base: {recipe.base}")
    click.echo(
        f"  candidates ({len(recipe.candidates)}): " + ", ".join(map(str, recipe.candidates))
    )
    if recipe.calibration is not None:
        click.echo(f"  calibration: {recipe.calibration.describe()}")
    settings = recipe.settings.public_dict()
    click.echo(
        "  options: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "calibration")
    )


@main.command()
@click.argument("plan_file")
@click.option("-o", "--output", default="-", help="Where to write the recipe (default: stdout).")
@click.option("--dtype", default=None, help="dtype: for the exported recipe.")
def export(plan_file: str, output: str, dtype: str | None) -> None:
    """Turn fw_plan.json into a plain mergekit `linear` recipe (no data, no gradients)."""
    from mergekit_fw.plan import FWPlan

    text = yaml.safe_dump(FWPlan.load(plan_file).linear_recipe(dtype), sort_keys=False)
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
