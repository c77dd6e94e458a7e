"""Without CUDA, the split-KV kernel's tests run through Triton's CPU interpreter, in a process of
their own: the interpreter is chosen when Triton is first imported, which may already have
happened in this one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the split-KV kernel is written in Triton, which is not installed")


def test_kernel_tests_pass_under_the_triton_interpreter():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device runs tests/test_decode_attention.py directly")
    module = Path(__file__).with_name("test_decode_attention.py")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
                         env=env, capture_output=True, text=True, timeout=900, cwd=module.parents[1])  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
