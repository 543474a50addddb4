"""Extract's hyper-parameters: declared once (defaults and checks), read by the CLI, the Python
API and the loop, and refused with the parameter's Python name."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

import essencekit
from essencekit.errors import OptionError
from essencekit.extraction.optimise import OptimiseSettings
from essencekit.extraction.settings import DEFAULTS, ExtractSettings, Recipe


@pytest.mark.parametrize("values, parameter, message", [
    ({"steps": 0}, "steps", "steps must be a whole number >= 1, got 0"),
    ({"lr": float("nan")}, "lr", "lr must be a finite number > 0 and <= 100, got nan"),
    ({"weight_decay": -0.1}, "weight_decay", "weight_decay must be a finite number >= 0 and <= 10, got -0.1"),
    ({"held_out": -1}, "held_out", "held_out must be a whole number >= 0, got -1"),
    ({"batch_size": 0}, "batch_size", "batch_size must be a whole number >= 1, got 0"),
    ({"restarts": True}, "restarts", "restarts must be a whole number >= 1, got True"),
    ({"init": "inverse"}, "init", "init must be one of auto, inversion, random, got 'inverse'"),
    ({"fast": "yes"}, "fast", "fast must be True or False, got 'yes'"),
    ({"lambda_transfer": 0, "lambda_consistency": 0}, "lambda_transfer", "there is nothing to optimise"),
    ({"num_sources": 1}, "num_sources", "use num_sources 2 or more (or lambda_consistency 0)"),
])
def test_a_bad_value_names_the_parameter_not_a_flag(values, parameter, message):
    with pytest.raises(OptionError) as caught:
        ExtractSettings(**values)
    assert caught.value.parameter == parameter and message in str(caught.value)
    assert "--" not in str(caught.value)


def test_the_python_api_refuses_before_loading_anything():
    # no generator, CLIP or target exists here: the settings are refused first
    with pytest.raises(OptionError, match="^steps must be") as caught:
        essencekit.extract("no-such-target.png", steps=0, generator="no-such-generator.pt")
    assert caught.value.parameter == "steps" and isinstance(caught.value, ValueError)


def test_the_loop_shares_the_declaration():
    loop = OptimiseSettings()
    for spec in fields(Recipe):
        assert getattr(loop, spec.name) == getattr(DEFAULTS, spec.name), spec.name
    with pytest.raises(OptionError) as caught:
        OptimiseSettings(render_size=0)
    assert caught.value.parameter == "render_size"
    recipe = ExtractSettings(steps=7, lr=0.5).recipe()
    assert OptimiseSettings(**recipe).steps == 7 and set(recipe) == {spec.name for spec in fields(Recipe)}


def test_the_cli_reads_its_defaults_from_the_declaration():
    from essencekit.cli.extract_cmd import extract

    options = inspect.signature(extract).parameters
    declared = {spec.name for spec in fields(ExtractSettings)} - {"truncation"}  # truncation has no flag
    for name in declared:
        default = options[name].default  # a typer.Option(...), or the value itself with Annotated options
        assert getattr(default, "default", default) == getattr(DEFAULTS, name), name
