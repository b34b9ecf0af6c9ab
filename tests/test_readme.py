"""Every ```python block of README.md runs (issue 17.9): each block in its
own fresh interpreter, the working directory a new temporary folder, the
repository root on PYTHONPATH and ``KD_README_TINY=1`` in the environment
(blocks that train read it to pick tiny sizes). A README that drifts from
the code fails here, naming the block by its line in README.md.

Command-line and server examples belong in ```bash blocks (not run here).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
TIMEOUT = 600


def python_blocks():
    """[(line of the opening fence, code)] of README.md, in order."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = python_blocks()


def test_every_python_fence_is_extracted():
    text = README.read_text(encoding="utf-8")
    opened = len(re.findall(r"^```python[ \t]*$", text, re.M))
    assert opened == len(BLOCKS) >= 6, (opened, len(BLOCKS))


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, tmp_path):
    script = tmp_path / f"readme_block_line_{line}.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, KD_README_TINY="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                          if p))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"the ```python block of README.md at line {line} failed (exit "
                    f"{proc.returncode}); its output:\n{proc.stderr[-5000:]}", pytrace=False)
