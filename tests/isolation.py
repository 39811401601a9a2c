"""Run Python code in a fresh interpreter where some packages cannot be imported."""

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

# Run before the code: importing any of the named top-level packages raises ImportError.
BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def run_without(blocked: Iterable[str], code: str, cwd: Path) -> str:
    """Run ``code`` with ``python -c`` in ``cwd`` with the ``blocked`` packages unimportable; return its stdout."""
    script = BLOCK.format(blocked=set(blocked)) + code
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
