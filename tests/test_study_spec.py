"""Study files: validation before any run starts, grid expansion, repeats, overrides, the
shipped studies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cxrlab.core.errors import CxrlabError
from cxrlab.study.main import shipped_study
from cxrlab.study.spec import load_plan, parse_overrides
from cxrlab.study.sweep import run_sweep


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "entry, line, key, words",
    [
        ("      learnig_rate: 1.0e-3\n", 7, "runs[0].learnig_rate", "unknown setting"),
        ("      lr: -1.0e-3\n", 7, "runs[0].lr", "greater than 0"),
        ("      weight_decay: 1.0e-4\n    - model: resnet51\n", 8, "runs[1].model", "unknown model 'resnet51'"),
    ],
)
def test_bad_study_file_fails_before_any_run_with_one_line(tmp_path, tiny_root, monkeypatch, entry, line, key, words):
    study = write(
        tmp_path / "bad.yaml",
        f"name: bad\ndata: {tiny_root}\nruns:\n    - model: scratch_cnn\n      mode: scratch\n      epochs: 1\n{entry}",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrlabError) as error:
        run_sweep(study, show_progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{study}, line {line}: {key}: "), message
    assert words in message
    assert not (tmp_path / "runs").exists(), "nothing may be made before the study file is known good"


def test_cli_prints_the_error_on_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from cxrlab import cli

    study = write(tmp_path / "typo.yaml", "data: x\ngrids:\n  - model: scratch_cnn\n    ephocs: [1, 2]\n")
    monkeypatch.setattr(sys, "argv", ["cxrlab", "sweep", str(study)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "line 4: grids[0].ephocs: unknown setting 'ephocs' (did you mean epochs?)" in err
    assert "Traceback" not in err


def test_grids_cross_their_lists_and_repeats_give_seeds(tmp_path):
    study = write(
        tmp_path / "grid.yaml",
        """
name: grid
data: some/data
repeats: 3
defaults: {image_size: 64, optimizer: adam}
runs:
  - {model: scratch_cnn, mode: scratch, lr: 1.0e-3}
grids:
  - model: resnet18
    mode: finetune
    lr: [1.0e-3, 1.0e-4]
    epochs: [2, 5]
    weight_decay: 1.0e-5
""",
    )
    plan = load_plan(study)
    assert len(plan.runs) == (1 + 2 * 2) * 3
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    settings = {r.setting_id for r in plan.runs}
    assert settings == {
        "scratch_cnn-scratch-lr=1e-3",
        "resnet18-finetune-lr=1e-3-ep=2-wd=1e-5",
        "resnet18-finetune-lr=1e-3-ep=5-wd=1e-5",
        "resnet18-finetune-lr=1e-4-ep=2-wd=1e-5",
        "resnet18-finetune-lr=1e-4-ep=5-wd=1e-5",
    }
    for setting in settings:
        assert sorted(r.seed for r in plan.runs if r.setting_id == setting) == [0, 1, 2]
    # Seed-major: every setting at seed 0 before any at seed 1.
    assert [r.seed for r in plan.runs] == sorted(r.seed for r in plan.runs)
    run = next(r for r in plan.runs if r.setting_id == "resnet18-finetune-lr=1e-4-ep=5-wd=1e-5" and r.seed == 2)
    assert run.run_id == "resnet18-finetune-lr=1e-4-ep=5-wd=1e-5-seed=2"
    assert (run.settings["lr"], run.settings["epochs"], run.settings["weight_decay"]) == (1e-4, 5, 1e-5)
    assert (run.settings["image_size"], run.settings["optimizer"], run.settings["seed"]) == (64, "adam", 2)
    assert run.settings["data"] == "some/data"


def test_overrides_rename_runs_and_merge_the_settings_they_make_equal(tmp_path):
    study = write(
        tmp_path / "s.yaml",
        "data: d\ngrids:\n  - {model: scratch_cnn, mode: scratch, epochs: [10, 20]}\n"
        "  - {model: scratch_cnn, mode: scratch, lr: [1.0e-3, 2.0e-3], epochs: 5}\n",
    )
    plan = load_plan(study, data="other", overrides=["epochs=1", "image_size=32", "optimizer=sgd"])
    assert plan.name == "s" and plan.data == "other"
    assert plan.overrides == {"epochs": 1, "image_size": 32, "optimizer": "sgd"}
    # Names say what runs: ep=1, not the file's ep=10 and ep=20, which became one setting.
    assert [r.run_id for r in plan.runs] == [
        "scratch_cnn-scratch-ep=1-seed=0",
        "scratch_cnn-scratch-lr=1e-3-ep=1-seed=0",
        "scratch_cnn-scratch-lr=2e-3-ep=1-seed=0",
    ]
    assert plan.merged == [
        "scratch_cnn-scratch-ep=20 (grids[0]) and scratch_cnn-scratch-ep=10 (grids[0]) are one setting after --set: "
        "run once as scratch_cnn-scratch-ep=1"
    ]
    assert all(
        (r.settings["epochs"], r.settings["image_size"], r.settings["data"]) == (1, 32, "other") for r in plan.runs
    )
    # Without --set the file's names stand.
    assert [r.setting_id for r in load_plan(study).runs][:2] == [
        "scratch_cnn-scratch-ep=10",
        "scratch_cnn-scratch-ep=20",
    ]


def test_name_sets_the_study_directory_and_must_be_a_folder_name(tmp_path):
    study = write(tmp_path / "s.yaml", "name: big\ndata: d\nruns:\n  - {model: scratch_cnn, mode: scratch}\n")
    assert load_plan(study, name="big-ep1").name == "big-ep1"
    with pytest.raises(CxrlabError, match=r"^--name: name '\.\./x' must be a plain folder name"):
        load_plan(study, name="../x")


@pytest.mark.parametrize(
    "override, words",
    [
        ("learnig_rate=1", "unknown setting 'learnig_rate'"),
        ("seed=3", "seeds come from repeats"),
        ("lr=-1", "greater than 0"),
        ("epochs", "write KEY=VALUE"),
    ],
)
def test_bad_overrides_are_one_line_errors(tmp_path, override, words):
    study = write(tmp_path / "s.yaml", "data: d\nruns:\n  - {model: scratch_cnn, mode: scratch}\n")
    with pytest.raises(CxrlabError) as error:
        load_plan(study, overrides=[override])
    assert str(error.value).startswith(f"--set {override}") and words in str(error.value)
    assert "\n" not in str(error.value)


def test_parse_overrides_reads_yaml_scalars():
    assert parse_overrides(["lr=3.0e-4", "epochs=2", "augment=none", "deterministic=true", "weights=null"]) == {
        "lr": 3e-4,
        "epochs": 2,
        "augment": "none",
        "deterministic": True,
        "weights": None,
    }


@pytest.mark.parametrize(
    "body, line, words",
    [
        (
            "runs:\n  - {model: scratch_cnn, lr: 1.0e-3}\n  - {model: scratch_cnn, lr: 1.0e-3}\n",
            4,
            "repeats the setting of runs[0]",
        ),
        ("runs:\n  - model: scratch_cnn\n    lr: 1.0e-3\n    lr: 2.0e-3\n", 5, "given twice"),
        ("runs:\n  - model: scratch_cnn\n    seed: 4\n", 4, "seeds come from repeats"),
        ("rnus:\n  - model: scratch_cnn\n", 2, "rnus: unknown setting 'rnus' (did you mean runs?) (known: name, "),
        (
            "search:\n  - model: scratch_cnn\n    trials: 4\n    space:\n      lr: {low: -1.0, high: 1.0}\n",
            6,
            "search[0].space.lr: Input should be greater than 0",
        ),
        (
            "search:\n  - model: scratch_cnn\n    trials: 4\n    space:\n      epochs: {low: 1.5, high: 4}\n",
            6,
            "takes whole numbers",
        ),
        ("grids:\n  - {model: scratch_cnn, lr: []}\n", 3, "empty list"),
        ("runs: [ {model: scratch_cnn\n", 3, "not valid YAML"),
    ],
)
def test_study_file_mistakes_name_their_line(tmp_path, body, line, words):
    study = write(tmp_path / "s.yaml", "data: d\n" + body)
    with pytest.raises(CxrlabError) as error:
        load_plan(study)
    assert str(error.value).startswith(f"{study}, line {line}:"), str(error.value)
    assert words in str(error.value)


def test_search_space_kinds_follow_the_setting(tmp_path):
    study = write(
        tmp_path / "s.yaml",
        """
data: d
repeats: 2
search:
  - model: scratch_cnn
    mode: scratch
    trials: 5
    epochs: 2
    space:
      lr: {low: 1.0e-5, high: 1.0e-2, log: true}
      batch_size: {low: 8, high: 32, step: 8}
      optimizer: {choices: [adam, sgd]}
""",
    )
    (search,) = load_plan(study).searches
    assert search.label == "scratch_cnn-scratch-search" and search.trials == 5
    assert search.fixed["epochs"] == 2 and "seed" not in search.fixed
    assert (search.space["lr"].kind, search.space["lr"].log) == ("float", True)
    assert (search.space["batch_size"].kind, search.space["batch_size"].step) == ("int", 8)
    assert search.space["optimizer"].choices == ("adam", "sgd")


def test_shipped_pneumonia_study_is_the_reports_table():
    plan = load_plan(shipped_study("pneumonia.yaml"))
    assert plan.data == "pneumoniamnist:224" and plan.repeats == 1
    finetuned = {
        (
            r.settings["model"],
            r.settings["lr"],
            r.settings["epochs"],
            r.settings["weight_decay"],
            r.settings["batch_size"],
        )
        for r in plan.runs
        if r.settings["mode"] == "finetune"
    }
    assert finetuned == {
        ("resnet50", 1e-3, 30, 1e-4, 32),
        ("resnet50", 1e-4, 20, 1e-5, 16),
        ("resnet50", 1e-4, 30, 1e-5, 32),
        ("resnet50", 1e-4, 20, 1e-5, 32),
        ("densenet121", 0.8e-4, 20, 1e-3, 32),
        ("densenet121", 1e-4, 15, 1e-4, 32),
        ("densenet121", 1e-4, 20, 1e-4, 32),
    }
    others = sorted((r.settings["model"], r.settings["mode"]) for r in plan.runs if r.settings["mode"] != "finetune")
    assert others == [("densenet121", "frozen"), ("resnet50", "frozen"), ("scratch_cnn", "scratch")]
    assert {r.settings["optimizer"] for r in plan.runs} == {"adam"}
    assert {r.settings["image_size"] for r in plan.runs} == {224}


def test_shipped_offline_study_is_the_default_and_runs_offline_models():
    default = shipped_study()
    assert default.name == "offline.yaml" and default.is_file()
    plan = load_plan(default)
    assert plan.data == "../shared/data/kermany-224"
    assert {(r.settings["model"], r.settings["mode"]) for r in plan.runs} == {
        ("efficientnet_lite0", "finetune"),
        ("efficientnet_lite0", "frozen"),
        ("scratch_cnn", "scratch"),
    }
    assert sum(r.settings["mode"] == "finetune" for r in plan.runs) == 4
    # The repository root's studies/ is the shipped folder.
    assert (Path(__file__).parents[1] / "studies" / "offline.yaml").resolve() == default.resolve()


def test_long_run_ids_stay_short_unique_and_keep_their_seed(tmp_path):
    keys = (
        "{model: efficientnet_lite0, mode: gradual, head_epochs: 10, head_lr: 1.0e-3, backbone_lr_scale: 0.25, "
        "label_smoothing: 0.1, warmup: 0.5, feature_views: 2, select: val_accuracy, threshold: val-balanced"
    )
    study = write(
        tmp_path / "long.yaml", f"data: d\nrepeats: 2\nruns:\n  - {keys}, lr: 1.0e-4}}\n  - {keys}, lr: 2.0e-4}}\n"
    )
    plan = load_plan(study)
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == 4 and all(len(i) <= 120 for i in ids)
    assert all(r.run_id == f"{r.setting_id}-seed={r.seed}" for r in plan.runs)
    assert len({r.setting_id for r in plan.runs}) == 2


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    from cxrlab.core.io import read_yaml

    study = write(
        tmp_path / "bomb.yaml", "data: d\nruns:\n  - {model: scratch_cnn}\n" + BOMB.replace("a:", "defaults_a:", 1)
    )
    for read in (load_plan, read_yaml):
        tick = time.perf_counter()
        with pytest.raises(CxrlabError, match=r"expands to more than \d+ values through its aliases"):
            read(study)
        assert time.perf_counter() - tick < 0.5, "refused before any walk over the expanded document"
    # A recursive alias is refused too, and a few honest anchors are fine.
    write(tmp_path / "loop.yaml", "a: &a [*a]\n")
    with pytest.raises(CxrlabError, match="aliases"):
        read_yaml(tmp_path / "loop.yaml")
    anchors = write(
        tmp_path / "anchors.yaml",
        "data: d\ndefaults: &d {model: scratch_cnn, mode: scratch}\nruns:\n  - *d\n  - {<<: *d, lr: 1.0e-3}\n",
    )
    assert [r.setting_id for r in load_plan(anchors).runs] == ["scratch_cnn-scratch", "scratch_cnn-scratch-lr=1e-3"]


def test_a_study_file_that_is_not_utf8_is_one_line(tmp_path):
    study = tmp_path / "latin1.yaml"
    study.write_bytes("data: d\ndescription: r\xe9sum\xe9\nruns:\n  - {model: scratch_cnn}\n".encode("latin-1"))
    with pytest.raises(CxrlabError) as error:
        load_plan(study)
    assert str(error.value) == f"study file {study} is not UTF-8 text (byte 0xe9 at offset 22): save it as UTF-8"


def test_external_sets_reach_every_run_and_stay_out_of_run_ids(tmp_path):
    study = write(
        tmp_path / "s.yaml",
        "data: d\nexternal: {official: ext/test, other: ext2}\nrepeats: 2\n"
        "runs:\n  - {model: scratch_cnn, mode: scratch, lr: 1.0e-3}\n"
        "search:\n  - {model: scratch_cnn, mode: scratch, trials: 2, space: {lr: {low: 1.0e-4, high: 1.0e-2}}}\n",
    )
    plan = load_plan(study)
    assert plan.external == {"official": "ext/test", "other": "ext2"}
    assert all(r.settings["external"] == {"official": "ext/test", "other": "ext2"} for r in plan.runs)
    assert plan.searches[0].fixed["external"] == plan.external
    assert [r.run_id for r in plan.runs] == ["scratch_cnn-scratch-lr=1e-3-seed=0", "scratch_cnn-scratch-lr=1e-3-seed=1"]
    assert "external" not in plan.record()["runs"][0]["settings"] and plan.record()["external"] == plan.external
    # Set once for the study: not per run, not by --set.
    per_run = write(tmp_path / "r.yaml", "data: d\nruns:\n  - {model: scratch_cnn, external: {a: b}}\n")
    with pytest.raises(CxrlabError, match=r"line 3: runs\[0\]\.external: external cannot be set per run"):
        load_plan(per_run)
    with pytest.raises(CxrlabError, match=r"^--set external=x: external cannot be set per run"):
        load_plan(study, overrides=["external=x"])


def test_a_missing_external_set_fails_before_anything_is_made(tmp_path, tiny_root, monkeypatch):
    study = write(
        tmp_path / "s.yaml",
        f"data: {tiny_root}\nexternal: {{official: {tmp_path / 'nowhere'}}}\nruns:\n  - {{model: scratch_cnn}}\n",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrlabError, match=r"s\.yaml: external\.official: data path .*nowhere does not exist"):
        run_sweep(study, show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_shipped_studies_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from cxrlab.study.catalog import find_study

    monkeypatch.chdir(tmp_path)
    assert find_study("offline") == shipped_study("offline")
    assert find_study("studies/offline.yaml") == shipped_study()
    assert find_study("recipe.yaml") == shipped_study("recipe")
    # A file that exists wins over the shipped name.
    mine = write(tmp_path / "offline.yaml", "data: d\nruns:\n  - {model: scratch_cnn}\n")
    assert find_study("offline.yaml") == Path("offline.yaml") and mine.is_file()
    with pytest.raises(CxrlabError, match=r"study file nothere does not exist: .*offline, pneumonia, recipe"):
        find_study("nothere")
