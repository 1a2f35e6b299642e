"""The fixed cost of a command: what it imports. A frozen run of one epoch should pay for
torch and the work, not for a compiler, a sweep framework or a plotting library."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Heavy packages and what may import them.
NOT_FOR_TRAIN = ("torch._inductor", "torch._dynamo", "optuna", "matplotlib", "jinja2", "pytorch_grad_cam")


def imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_command_line_starts_without_torch():
    modules = imported_after("import cxrlab.cli, cxrlab")
    assert "torch" not in modules and "optuna" not in modules and "importlib.metadata" not in modules


@pytest.mark.slow
def test_a_frozen_run_imports_only_what_it_uses(tiny_root, tmp_path):
    run = (
        "import sys\nfrom cxrlab.cli import main\n"
        f"sys.argv = ['cxrlab', 'train', '--data', {str(tiny_root)!r}, '--model', 'scratch_cnn', '--mode', 'frozen',"
        f" '--weights', 'none', '--image-size', '32', '--epochs', '1', '--out', {str(tmp_path)!r}, '--quiet']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )
    modules = imported_after(run)
    assert "torch" in modules  # it did train
    heavy = sorted(m for m in modules if m.startswith(NOT_FOR_TRAIN))
    assert not heavy, heavy[:10]


def test_deterministic_flag_without_the_compiler():
    modules = imported_after(
        "import torch\nfrom cxrlab.training.runtime import seed_everything\n"
        "seed_everything(0, True)\nassert torch.are_deterministic_algorithms_enabled()"
    )
    assert "torch._inductor" not in modules
