"""The torchvision import fix: dormant until torchvision is imported, and a no-op where the ops exist."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)


def test_import_cl_suite_imports_nothing_heavy():
    r = run("import sys, cl_suite; print('torch' in sys.modules, 'torchvision' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_torchvision_imports_after_cl_suite():
    r = run("import cl_suite, torchvision, torch; print(torchvision.__version__, hasattr(torch.ops.torchvision, 'nms'))")
    assert r.returncode == 0, r.stderr


def test_fix_does_nothing_when_the_ops_exist():
    r = run(
        "import cl_suite, torchvision\n"
        "from cl_suite import _torchvision_fix as fix\n"
        "print(fix.define_missing_ops())\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
