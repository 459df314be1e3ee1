"""Importing tiled_unet puts PyTorch's large CPU buffers on transparent huge pages (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages: Linux")

# PyTorch aligns the buffers it advises for huge pages to the page size, the others to 64 bytes
PROBE = ("import os, tiled_unet, torch; "
         "buffers = [torch.empty(n << 20, dtype=torch.uint8) for n in (3, 5, 9)]; "
         "print(os.environ['THP_MEM_ALLOC_ENABLE'], [b.data_ptr() % 4096 for b in buffers])")


def run_probe(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**environ, **env},
                          check=True)
    return proc.stdout.strip()


def test_import_turns_huge_pages_on_before_torch_allocates():
    assert run_probe() == "1 [0, 0, 0]"


def test_a_value_the_user_set_is_kept():
    setting, offsets = run_probe(THP_MEM_ALLOC_ENABLE="0").split(" ", 1)
    assert setting == "0"
    assert offsets != "[0, 0, 0]"
