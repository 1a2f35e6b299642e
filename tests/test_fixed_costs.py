"""The fixed cost of a command: what it imports. A frozen run of one epoch should pay for
torch and the work, not for a compiler, a sweep framework or a plotting library."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Heavy packages a single run has no use for. (torch's compiler stack, torch._dynamo and
# torch._inductor, is imported by torch.optim itself when the first optimiser is built.)
# scikit-learn and scipy cost a run about 1.5 s to import, for counts numpy makes as well.
NOT_FOR_TRAIN = ("optuna", "matplotlib", "jinja2", "pytorch_grad_cam", "sklearn", "scipy")
NOT_FOR_PREDICT = ("torch._inductor", "torch._dynamo", "pandas", *NOT_FOR_TRAIN)


def imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_command_line_starts_without_torch():
    modules = imported_after("import cxrlab.cli, cxrlab")
    assert "torch" not in modules and "optuna" not in modules and "importlib.metadata" not in modules


def command(*args: str) -> str:
    """Code that runs ``cxrlab ARGS`` in-process and fails on a non-zero exit."""
    return (
        f"import sys\nfrom cxrlab.cli import main\nsys.argv = ['cxrlab', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )


@pytest.mark.slow
def test_train_and_predict_import_only_what_they_use(tiny_root, tmp_path):
    train = ("train", "--data", str(tiny_root), "--model", "scratch_cnn", "--mode", "frozen", "--weights", "none")
    modules = imported_after(
        command(*train, "--image-size", "32", "--epochs", "1", "--out", str(tmp_path), "--name", "run", "--quiet")
    )
    assert "torch" in modules  # it did train
    heavy = sorted(m for m in modules if m.startswith(NOT_FOR_TRAIN))
    assert not heavy, heavy[:10]

    image = next((tiny_root / "train" / "PNEUMONIA").iterdir())
    modules = imported_after(command("predict", str(tmp_path / "run"), str(image)))
    heavy = sorted(m for m in modules if m.startswith(NOT_FOR_PREDICT))
    assert not heavy, heavy[:10]


def test_deterministic_flag_without_the_compiler():
    modules = imported_after(
        "import torch\nfrom cxrlab.training.runtime import seed_everything\n"
        "seed_everything(0, True)\nassert torch.are_deterministic_algorithms_enabled()"
    )
    assert "torch._inductor" not in modules
