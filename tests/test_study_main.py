"""``cxrlab study``: the main job, a sweep then its report; the shipped default study."""

from __future__ import annotations

import pytest

from cxrlab.core.errors import CxrlabError
from cxrlab.study.main import run_study


@pytest.mark.slow
def test_study_sweeps_then_writes_the_report(tmp_path, tiny_root):
    study = tmp_path / "small.yaml"
    study.write_text(f"""
name: small
data: {tiny_root}
defaults: {{image_size: 32, batch_size: 16, epochs: 1}}
runs:
  - {{model: scratch_cnn, mode: scratch, lr: 1.0e-3}}
  - {{model: scratch_cnn, mode: frozen, lr: 1.0e-3}}
""")
    paths = run_study(study, out=tmp_path / "out")
    study_dir = tmp_path / "out" / "small"
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert all(p.is_file() and p.parent == study_dir for p in paths)
    assert (study_dir / "results.md").is_file()
    assert len(list((study_dir / "runs").iterdir())) == 2


def test_study_without_a_file_runs_the_shipped_offline_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrlabError, match=r"data path .*no-such-data does not exist"):
        run_study(None, data=str(tmp_path / "no-such-data"))
    assert not (tmp_path / "runs").exists(), "a missing data folder fails before the study directory is made"
    # With no --data it reads the study's own data, relative to the current folder.
    with pytest.raises(CxrlabError, match=r"data path \.\./shared/data/kermany-224 does not exist"):
        run_study(None)
