"""Every file in examples/ runs: the fast ones here, the cold demo and the real package install as `slow`."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmfair.core.config import PrepConfig, load_config_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLUGIN = EXAMPLES / "plugin_method"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered_here():
    names = {p.name for p in EXAMPLES.iterdir() if not p.name.startswith(("study_", "."))}  # studies: their own test
    assert names == {"quickstart.sh", "real_mimic_prep.yaml", "python_api.py", "plugin_method"}


def test_quickstart_is_valid_bash_running_the_demo_steps():
    subprocess.run(["bash", "-n", str(EXAMPLES / "quickstart.sh")], check=True)
    text = (EXAMPLES / "quickstart.sh").read_text()
    for step in (" prep", " train ", " eval-missing ", " eval-fair", " report --format html"):
        assert step in text


def test_real_mimic_prep_config_builds_a_prep_config():
    cfg = PrepConfig.model_validate(load_config_file(EXAMPLES / "real_mimic_prep.yaml"))
    assert cfg.mimic_root == Path("/data/physionet.org/files/mimiciv/2.2")
    assert cfg.cxr_root == Path("/data/physionet.org/files/mimic-cxr-jpg/2.0.0")
    assert (cfg.window_hours, cfg.min_age, cfg.n_folds, cfg.image_size) == (48, 18, 5, 256)


def test_python_api_makes_its_figure(tmp_path):
    fixture = _load(ROOT / "tests" / "core" / "reporting" / "conftest.py", "report_fixture")
    ws = fixture.write_workspace(tmp_path / "ws")
    api = _load(EXAMPLES / "python_api.py", "python_api_example")
    out = api.main(str(ws.root), str(tmp_path / "fig.png"))
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def _run_contract_tests(pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_plugin_contract_passes_with_its_entry_point(tmp_path):
    """The package as pip would leave it (module + dist-info with the entry point), without a pip install."""
    info = tmp_path / "mmfair_plugin_mean-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmfair-plugin-mean\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[mmfair.fusions]\nplugin-mean = mmfair_plugin_mean\n")
    result = _run_contract_tests([tmp_path, PLUGIN])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.slow
def test_plugin_installs_with_pip_and_passes_its_contract(tmp_path):
    import shutil

    source, target = tmp_path / "plugin", tmp_path / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__"))  # builds leave files behind
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=600)  # fmt: skip
    result = _run_contract_tests([target])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_quickstart_runs_the_demo_and_writes_the_html_report(tmp_path):
    ws = tmp_path / "ws"
    env = {**os.environ, "MMFAIR": str(Path(sys.executable).parent / "mmfair")}
    result = subprocess.run(["bash", str(EXAMPLES / "quickstart.sh"), str(ws)], env=env, capture_output=True,
                            text=True, timeout=3000)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (ws / "reports" / "report.html").exists()
    assert result.stdout.strip().endswith(f"{ws}/reports/report.html")
    terminal = subprocess.run([env["MMFAIR"], "--workspace", str(ws), "report"], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "100"}, check=True).stdout.splitlines()  # fmt: skip
    assert len(terminal) <= 120 and max(map(len, terminal)) <= 100
