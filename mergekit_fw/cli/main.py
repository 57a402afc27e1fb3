"""`mergekit-fw`: run, check and export Frank-Wolfe merges.

`run` is mergekit-yaml with the method registered explicitly, so it works in every install
mode (editable installs drop the .pth hook).
"""

from __future__ import annotations

import os
import sys

import click
import yaml

import mergekit_fw  # noqa: F401  (registers the method and the run_merge wrapper)
from mergekit_fw.mergekit.errors import PresentingGroup
from mergekit_fw.settings import FWConfigError


def _one_line(error: Exception) -> str:
    """A validation or YAML error as one readable line (pydantic's are several)."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in item['loc']) or 'recipe'}: {item['msg']}"
            for item in error.errors()[:3]
        ]
        more = error.error_count() - len(problems)
        return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
    return " ".join(str(error).split()) or type(error).__name__


def _load_config(path: str):
    from mergekit.config import MergeConfiguration

    from mergekit_fw.mergekit.checks import check_source, load_yaml_unique

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        check_source(text, path)
        return MergeConfiguration.model_validate(load_yaml_unique(text, path))
    except FileNotFoundError:
        raise click.ClickException(f"No such recipe: {path}") from None
    except FWConfigError:
        raise
    except Exception as error:
        raise click.ClickException(
            f"{path} is not a valid mergekit recipe: {_one_line(error)}"
        ) from None


RUN_HELP = """Run a mergekit recipe, as `mergekit-yaml CONFIG OUT` does, with merge_method:
frank_wolfe registered explicitly (works in every install mode; the stock mergekit-yaml
needs the installed hook). A frank_wolfe run is checked first (as `mergekit-fw check
CONFIG`), resumes a killed pre-pass from OUT.fw-state/, and ends with a summary. Takes
mergekit-yaml's own options, plus --no-resume and --plan PLAN."""

RUN_OPTIONS = (  # mergekit-fw run's own options, beside mergekit-yaml's
    ("--no-resume", {"is_flag": True, "help": "Ignore a saved pre-pass state and start over "
                     "(with the stock mergekit-yaml: MERGEKIT_FW_NO_RESUME=1 mergekit-yaml "
                     "CONFIG OUT)."}),
    ("--plan", {"default": None, "metavar": "PLAN", "help": "Write the merge from a saved "
                "plan (`mergekit-fw plan CONFIG -o PLAN`, or an earlier OUT/fw_plan.json): "
                "no calibration data, no gradients. The recipe key parameters.plan does the "
                "same for mergekit-yaml."}),
)  # fmt: skip


def run_command() -> click.Command:
    """`mergekit-fw run`: mergekit-yaml's own click command (its arguments and every
    mergekit option, parsed as mergekit declares them) with RUN_OPTIONS added. Built when
    it is called: mergekit's command imports torch, which `mergekit-fw check` never needs."""
    import mergekit.merge  # noqa: F401  (installs the run_merge wrapper via the hook)
    from mergekit.scripts.run_yaml import main as run_yaml

    from mergekit_fw.mergekit.resume import requested

    def run(no_resume: bool, plan: str | None, **params) -> None:
        if os.path.isfile(params["config_file"]):  # one line, not mergekit-yaml's traceback
            _load_config(params["config_file"])
        with requested(resume=not no_resume, plan=plan):
            run_yaml.callback(**params)

    own = [click.Option([name], **kwargs) for name, kwargs in RUN_OPTIONS]
    return click.Command("run", callback=run, params=[*run_yaml.params, *own], help=RUN_HELP)


class FWGroup(PresentingGroup):
    """mergekit-fw's commands; `run` is built on demand (`run_command`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "run"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return run_command() if name == "run" else super().get_command(ctx, name)


@click.group(cls=FWGroup)  # FWConfigError -> "Error: ..."
@click.version_option(mergekit_fw.__version__)
def main() -> None:
    """Frank-Wolfe Merging for mergekit."""


@main.command(name="plan")
@click.argument("config_file")
@click.option("-o", "--output", required=True, help="Where to write the plan (JSON).")
@click.option("--device", default=None, help="Math device of the pre-pass (cpu, cuda, auto).")
@click.option("--no-resume", is_flag=True, help="Ignore a saved pre-pass state; start over.")
@click.option("--trust-remote-code", is_flag=True, help="Passed to transformers.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def plan_command(
    config_file: str, output: str, device: str | None, no_resume: bool,
    trust_remote_code: bool, quiet: bool,
) -> None:  # fmt: skip
    """Run the pre-pass only and save the plan (coefficients + input fingerprint); write it
    later with `mergekit-fw run CONFIG OUT --plan PLAN`."""
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.resume import requested
    from mergekit_fw.mergekit.runner import plan_only

    config = _load_config(config_file)
    options = MergeOptions(device=device, trust_remote_code=trust_remote_code, quiet=quiet)
    with requested(resume=not no_resume):
        plan = plan_only(config, output, options)
    click.echo(
        f"Plan written to {output}: {len(plan.iterations)} iterations, final loss "
        f"{plan.final_loss:.5f} ({plan.stopped})"
    )


@main.command()
@click.argument("config_file")
@click.option(
    "--calibration/--no-calibration",
    default=True,
    help="Also read and tokenize the calibration data.",
)
@click.option(
    "--distances",
    is_flag=True,
    help="Also read the weights: each candidate's ||theta - base|| / ||base|| (foreign screen).",
)
@click.option(
    "--estimate",
    is_flag=True,
    help="Also estimate, from the weight files' headers, the pre-pass's peak memory and reads "
    "(in memory and out of core) beside mergekit TIES of the same pool.",
)
def check(config_file: str, calibration: bool, distances: bool, estimate: bool) -> None:
    """Validate a frank_wolfe recipe without loading any model weights (unless --distances)."""
    from mergekit_fw.mergekit.checks import check_recipe

    config = _load_config(config_file)
    try:
        recipe = check_recipe(config, with_calibration=calibration)
        measured = _distances(recipe) if distances else None  # may fail: before "OK:"
    except FWConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"OK: {config_file}")
    click.echo(f"  base: {recipe.base}")
    click.echo(
        f"  candidates ({len(recipe.candidates)}): " + ", ".join(map(str, recipe.candidates))
    )
    if recipe.adapters:  # LoRA adapter vertices (parameters.adapters)
        click.echo(
            f"  adapters ({len(recipe.adapters)}): "
            + ", ".join(f"{a.label} ({a.path})" for a in recipe.adapters)
        )
    if recipe.calibration is not None:
        click.echo(f"  calibration: {recipe.calibration.describe()}")
    settings = recipe.settings.public_dict()
    click.echo(
        "  options: "
        + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in settings.items() if k != "calibration")
    )
    if measured is not None:
        _print_distances(recipe, measured)
    if estimate:
        _print_estimate(recipe, config)


def _print_estimate(recipe, config) -> None:
    import torch
    from mergekit.common import dtype_from_name
    from mergekit.io.tasks import LoaderCache
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.estimate import estimate_recipe
    from mergekit_fw.mergekit.runner import vertex_pool

    options = MergeOptions()
    LoaderCache().setup(options)
    dtype = dtype_from_name(config.dtype) or torch.float32
    found = estimate_recipe(recipe, vertex_pool(recipe, config, options), dtype)
    click.echo("  estimate (headers only; its accuracy: docs/benchmarks_scale.md):")
    click.echo(found.table())


def _yaml_value(value) -> str:
    """A value as the recipe would spell it (null, false, 0.5), not as Python prints it."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _distances(recipe) -> list:
    from mergekit_fw.mergekit.foreign import candidate_distances

    return list(candidate_distances(recipe))


def _print_distances(recipe, measured: list) -> None:
    s = recipe.settings
    click.echo(f"  distances ||theta - base|| / ||base|| (max_distance {s.max_distance}):")
    for entry, label, d in measured:
        verdict = "ok"
        if d > s.max_distance:
            verdict = {"exclude": "FOREIGN: left out", "error": "FOREIGN: error"}.get(
                s.foreign, "FOREIGN: kept"
            )
        click.echo(f"    {label}: {d:.4f}  {verdict}  ({entry})")


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


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@main.command(name="eval")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--tasks", "-t", multiple=True, required=True, help="lm-eval tasks: T1,T2 (or repeat)."
)
@click.option("--compare", "-c", multiple=True, help="Also evaluate this model (repeatable).")
@click.option(
    "--auto-compare/--no-auto-compare",
    default=True,
    help="Without --compare, also evaluate the base and candidates from OUT/fw_plan.json.",
)
@click.option("--include-path", multiple=True, help="Folder of extra lm-eval task YAMLs.")
@click.option("--limit", type=float, default=None, help="Docs per task (<1: a fraction).")
@click.option("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if any).")
@click.option("--batch-size", default=None, help="Default: auto on GPU, 8 on CPU.")
@click.option("--dtype", default="auto", show_default=True, help="dtype the models load in.")
@click.option("--num-fewshot", type=int, default=None, help="Override the tasks' shot count.")
@click.option("--metric", default=None, help="Headline metric where a task has it (e.g. acc_norm).")
@click.option("--output", "-o", default=None, help="JSON file (default: OUT/fw_eval.json).")
@click.option("--trust-remote-code", is_flag=True, help="Passed to transformers.")
@click.option("--verbose", is_flag=True, help="Show lm-eval's own logging.")
def eval_command(
    out: str,
    tasks: tuple[str, ...],
    compare: tuple[str, ...],
    auto_compare: bool,
    include_path: tuple[str, ...],
    limit: float | None,
    device: str | None,
    batch_size: str | None,
    dtype: str,
    num_fewshot: int | None,
    metric: str | None,
    output: str | None,
    trust_remote_code: bool,
    verbose: bool,
) -> None:
    """Run lm-eval on merge OUT and, side by side, on the models it was merged from."""
    from mergekit_fw.cli.evaluate import EvalError, quiet_lm_eval, run_eval

    quiet_lm_eval(verbose)
    if limit is not None and limit >= 1:
        limit = int(limit)
    size: int | str | None = batch_size
    if batch_size is not None and batch_size.isdigit():
        size = int(batch_size)
    try:
        document = run_eval(
            out, _split_names(tasks), compare=compare, auto_compare=auto_compare,
            include_paths=include_path, limit=limit, device=device, batch_size=size,
            dtype=dtype, num_fewshot=num_fewshot, metric=metric,
            trust_remote_code=trust_remote_code, output=output,
            progress=lambda line: click.echo(line, err=True),
        )  # fmt: skip
    except EvalError as error:
        raise click.ClickException(str(error)) from None
    click.echo(document["table"])
    click.echo(f"Results: {document['path']}", err=True)


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
def report(out: str) -> None:
    """Plots (loss, FW gap, coefficients, wins) and the model-card section for merge OUT."""
    from pathlib import Path

    from mergekit_fw.plan import PLAN_FILE
    from mergekit_fw.report.card import write_report

    if not Path(out).is_dir():
        raise click.ClickException(f"{out} is not a folder; pass the output folder of a merge.")
    if not (Path(out) / PLAN_FILE).exists():
        raise click.ClickException(
            f"{out} has no {PLAN_FILE}: it is not the output folder of a finished "
            "frank_wolfe merge."
        )
    try:
        paths = write_report(out)
    except ImportError as error:
        raise click.ClickException(
            f"Plots need matplotlib ({error}): pip install 'mergekit-fw[plots]'"
        ) from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    for path in paths:
        click.echo(str(path))


if __name__ == "__main__":
    main()
