"""Issue 26 item 9: ``overinterp evaluate`` on a folder of two 6000×6000 PNGs (about 210 KB on
disk; the attack took 8.07 GB resident), run in a child process whose peak RSS is measured.
Shared by tests/data/test_decode.py and bench/faults.py; import as ``faults.bigimages``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["write_big_pngs", "evaluate_peak_rss"]


def write_big_pngs(folder: Path, side: int = 6000, count: int = 2) -> list[Path]:
    """``count`` striped ``side``×``side`` RGB PNGs, one per class folder (they compress to ~100 KB)."""
    from PIL import Image

    paths = []
    for i in range(count):
        a = np.zeros((side, side, 3), np.uint8)
        a[::7, :, i % 3] = 255
        p = folder / f"c{i}" / "x.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def evaluate_peak_rss(root: Path, timeout: float = 300) -> tuple[int, float, str]:
    """``evaluate`` of a 2-class smallcnn on two 6000×6000 PNGs under ``root``:
    (exit code, peak resident set in MB, stderr)."""
    import torch

    from overinterp.models import create_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(root / "m.pt", create_model("smallcnn", num_classes=2, width=4), "smallcnn")
    write_big_pngs(root / "data")
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak over into the child's ru_maxrss
    code = (
        "import sys; from overinterp.cli import main; rc = main(sys.argv[1:]); "
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]; "
        "print('PEAK', hwm); sys.exit(rc)"
    )
    argv = ["evaluate", "--model", str(root / "m.pt"), "--dataset", str(root / "data"), "--no-progress"]
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout)
    peak_kb = int(r.stdout.split("PEAK")[1].split()[0]) if "PEAK" in r.stdout else 0
    return r.returncode, peak_kb / 1024, r.stderr
