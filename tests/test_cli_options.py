"""The command line's surface: options made from TrainConfig, help that teaches, one-line
usage errors, and one code path with the Python API. Nothing here trains."""

from __future__ import annotations

import json
import typing

import pytest
import typer

import cxrlab
from cxrlab.cli import app
from cxrlab.cli.options import option_name
from cxrlab.training.config import TrainConfig


def command(name: str):
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def options_of(name: str) -> dict[str, object]:
    return {opt: param for param in command(name).params for opt in param.opts + param.secondary_opts}


@pytest.mark.parametrize("name", ["train", "lr-find"])
def test_every_config_field_is_an_option(name):
    options = options_of(name)
    missing = [option_name(field) for field in TrainConfig.model_fields if option_name(field) not in options]
    assert not missing, f"TrainConfig fields without a {name} option: {missing}"
    # Fields that the hand-written command line could not set before.
    for field in ("momentum", "feature_cache", "val_fraction", "test_fraction", "channels_last", "eval_batch_size"):
        assert option_name(field) in options


def test_help_lists_choices_defaults_bounds_and_examples(cli):
    result = cli("train", "-h")
    assert result.code == 0
    text = " ".join(result.out.split())
    for field in ("mode", "optimizer", "scheduler", "augment", "threshold"):
        choices = typing.get_args(typing.get_args(TrainConfig.model_fields[field].annotation)[0]) or typing.get_args(
            TrainConfig.model_fields[field].annotation
        )
        assert f"--{field} <{'|'.join(map(str, choices))}>" in text, field
    assert "[default: (32)]" in text  # batch size
    assert "[1 <= x <= 100000]" in text  # epochs' bounds
    assert text.count("[required unless --resume]") == 2  # --data and --model
    assert "hours on a CPU" in text
    assert "Examples: cxrlab train --data" in text
    assert "--external NAME=PATH" in text


@pytest.mark.parametrize(
    "name", ["train", "lr-find", "evaluate", "predict", "export", "models", "compare", "sweep", "report", "study"]
)
def test_short_help_on_every_command(cli, name):
    result = cli(name, "-h")
    assert result.code == 0 and "Usage: cxrlab" in result.out


def test_data_show_help_and_examples(cli):
    result = cli("data", "show", "-h")
    assert result.code == 0 and "Examples:" in result.out and "--augment <none|light|strong>" in result.out


def test_version_and_completion(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"cxrlab {cxrlab.__version__}"
    top = cli("-h")
    assert "--install-completion" in top.out and "--show-completion" in top.out


@pytest.mark.parametrize(
    "args, names",
    [
        (["train", "--data", "d", "--model", "scratch_cnn", "--mode", "bogus"], "--mode"),
        (["train", "--data", "d", "--model", "scratch_cnn", "--epochs", "x"], "--epochs"),
        (["train", "--no-such-flag"], "--no-such-flag"),
        (["models", "--image-size", "0"], "--image-size"),
        (["predict", "runs/x", "a.png", "--tta", "-1"], "--tta"),
        (["evaluate", "runs/x", "--data", "d", "--tta", "-3"], "--tta"),
        (["evaluate", "runs/x", "--data", "d", "--top-losses", "-1"], "--top-losses"),
        (["data", "show", "d", "--out", "g.png", "--per-class", "0"], "--per-class"),
        (["lr-find", "--data", "d", "--model", "scratch_cnn", "--steps", "2"], "--steps"),
        (["evaluate"], "run_dir"),
    ],
)
def test_usage_errors_are_one_line(cli, args, names):
    result = cli(*args)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0], result.err
    assert "Traceback" not in result.err


def test_config_errors_are_one_line(cli, tmp_path):
    cases = [
        (["--epochs", "0"], "--epochs: Input should be greater than or equal to 1 (got 0)"),
        (["--lr", "-1"], "--lr"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--seed", str(2**40)], "--seed"),
        (["--name", "../x"], "--name"),
        (["--external", "no-equals-sign"], "--external"),
        (["--external", "a=x", "--external", "a=y"], "given twice"),
    ]
    for extra, name in cases:
        result = cli("train", "--data", str(tmp_path), "--model", "scratch_cnn", "--out", str(tmp_path / "r"), *extra)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and name in result.err, (extra, result)
    assert not (tmp_path / "r").exists()  # nothing written for a refused run


def test_resume_refuses_other_settings(cli, tmp_path):
    result = cli("train", "--resume", str(tmp_path), "--epochs", "3", "--lr", "0.1")
    assert result.code == 2
    assert "--epochs, --lr" in result.err and "leave out" in result.err
    with pytest.raises(cxrlab.api.CxrlabError, match="epochs cannot change"):
        cxrlab.train(resume=tmp_path, epochs=3)


def test_out_that_is_a_file_is_refused(cli, tmp_path):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    result = cli("train", "--data", str(tmp_path), "--model", "scratch_cnn", "--out", str(existing))
    assert result.code == 2 and "a file is there" in result.err
    assert existing.read_text() == "x"
    for args in (["predict", "run", "img.png", "--cam", str(existing)], ["export", "run", "--out", str(existing)]):
        result = cli(*args)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and str(existing) in result.err


def test_the_command_line_starts_runs_through_the_api(cli, monkeypatch, tmp_path):
    """One code path: `cxrlab train` hands the given settings, and only those, to cxrlab.api.train."""
    seen = {}

    def fake_train(**kwargs):
        seen.update(kwargs)
        raise cxrlab.api.CxrlabError("stopped here")

    monkeypatch.setattr(cxrlab.api, "train", fake_train)
    result = cli(
        "train",
        "--data",
        "d",
        "--model",
        "scratch_cnn",
        "--momentum",
        "0.5",
        "--no-feature-cache",
        "--external",
        "site=other/",
        "--patience",
        "3",
    )
    assert result.code == 2 and "stopped here" in result.err
    settings = {k: v for k, v in seen.items() if k not in ("resume", "show_progress")}
    assert settings == dict(
        data="d", model="scratch_cnn", momentum=0.5, feature_cache=False, external={"site": "other/"}, patience=3
    )
    # The API validates them into the same TrainConfig a study file makes.
    config = cxrlab.api.train_config(**settings)
    assert config == TrainConfig(**settings)


def test_train_config_errors_match_between_api_and_cli(cli):
    with pytest.raises(cxrlab.api.CxrlabError, match=r"train: patience: .*greater than or equal to 1"):
        cxrlab.api.train_config("d", "scratch_cnn", patience=0)
    result = cli("train", "--data", "d", "--model", "scratch_cnn", "--patience", "0")
    assert result.code == 2 and "--patience: Input should be greater than or equal to 1 (got 0)" in result.err


def test_image_size_bounds_of_models_and_data_show_are_the_configs():
    from cxrlab.cli.inspect import SIZE_MAX, SIZE_MIN
    from cxrlab.cli.options import bounds_text

    assert bounds_text(TrainConfig.model_fields["image_size"]) == f"{SIZE_MIN} <= x <= {SIZE_MAX}"


def test_models_names_are_whole_when_piped_narrow(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    result = cli("models")
    assert result.code == 0
    from cxrlab.models.registry import MODELS

    for name in MODELS:
        assert f" {name} " in result.out, name
    assert "…" not in result.out


def test_models_table_keeps_names_on_a_narrow_terminal():
    from rich.console import Console

    from cxrlab.cli.inspect import models_table
    from cxrlab.models.cards import model_cards

    console = Console(width=60, force_terminal=True, record=True)
    console.print(models_table(model_cards(["efficientnet_lite0", "convnext_tiny"]), 224))
    text = console.export_text()
    assert "efficientnet_lite0" in text and "convnext_tiny" in text


def test_models_lists_timm(cli):
    result = cli("models", "--timm", "resnet1*")
    assert result.code == 0
    lines = result.out.splitlines()
    assert "timm:resnet18\timagenet weights" in lines
    as_json = json.loads(cli("models", "--timm", "resnet18", "--json").out)
    assert as_json == [{"model": "timm:resnet18", "pretrained": True}]
    none = cli("models", "--timm", "no-such-net*")
    assert none.code == 0 and "no timm model matches" in none.out


def test_a_field_added_later_is_an_option_without_edits():
    """What another field of TrainConfig would get: its type, bounds, help and a default of 'not given'."""
    from pydantic import Field
    from typer.testing import CliRunner

    from cxrlab.cli.options import with_config_options

    class Extended(TrainConfig):
        mixup: float = Field(0.0, ge=0, le=1, description="Mixup strength.")
        views: list[str] = Field(default_factory=list, description="Views to use.")

    seen = {}
    extended = typer.Typer(rich_markup_mode=None)

    def command(settings: dict, quiet: bool = typer.Option(False, "--quiet")) -> None:
        seen.update(settings)

    extended.command()(with_config_options(command, Extended))
    runner = CliRunner()
    help_text = " ".join(runner.invoke(extended, ["--help"]).output.split())
    assert "--mixup FLOAT" in help_text or "--mixup <float>" in help_text
    assert "Mixup strength. [0 <= x <= 1]" in help_text
    result = runner.invoke(extended, ["--mixup", "0.2", "--views", "AP", "--views", "PA", "--data", "d"])
    assert result.exit_code == 0, result.output
    assert seen == {"mixup": 0.2, "views": ["AP", "PA"], "data": "d"}
    assert Extended(model="m", **seen).mixup == 0.2
