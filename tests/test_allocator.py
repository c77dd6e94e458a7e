"""keep_freed_memory: large blocks come from the heap once it is applied (glibc, Linux)."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, sys
    from pipeline.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    address = libc.malloc(64 << 20)  # 64 MiB: glibc would mmap it by default
    in_thread = []  # a worker thread's block too (a round builds its shards in threads)
    import threading
    worker = threading.Thread(target=lambda: in_thread.append(libc.malloc(64 << 20)))
    worker.start(); worker.join()
    heap = [line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
    start, end = (int(x, 16) for x in heap[0].split()[0].split("-")) if heap else (0, 0)
    print(applied, keep_freed_memory() if applied else None, start <= address < end, start <= in_thread[0] < end)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap_once_applied():
    def probe(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()

    assert probe("keep") == ["True", "True", "True", "True"]  # applied, idempotent, both blocks in the heap
    assert probe("default") == ["False", "None", "False", "False"]  # glibc's default: mmap'd outside the heap
