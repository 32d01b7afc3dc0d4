"""The committed generated code matches the protos; the protos pass buf."""

import filecmp
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = tmp_path / "mesh" / "v1"
    committed = ROOT / "mesh" / "v1"
    fresh_files = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed_files = sorted(
        p.name for p in committed.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}
    )
    assert fresh_files == committed_files, "generated file set differs: run python protos/generate.py"
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, fresh_files, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code {mismatch or errors}: run python protos/generate.py"
    )


def _buf() -> str:
    candidate = pathlib.Path(sys.executable).parent / "buf"
    found = str(candidate) if candidate.exists() else shutil.which("buf")
    if not found:
        pytest.fail("buf is not installed (pip install buf-bin)")
    return found


@pytest.mark.parametrize(
    "args",
    [["lint"], ["format", "--diff", "--exit-code"], ["breaking", "--against", "protos/baseline.binpb"]],
    ids=["lint", "format", "breaking"],
)
def test_buf(args):
    result = subprocess.run([_buf(), *args], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
