"""Benchmark: what a napari session holds before the Embed widget embeds a tile (issue 12's peak-RSS floor).

In this fresh interpreter, step by step as the slide-scale benchmark builds its viewer (a shown napari.Viewer,
the Embed widget's module, the dock, the model, one forward of a batch in a worker thread): RSS split into
anonymous memory and mapped files (``/proc/self/smaps_rollup``), the modules each step imported (by top-level
package), then the resident mapped files grouped (CUDA libraries, torch, triton, Mesa, Qt, ...) and the largest
single mappings. Needs a display: ``xvfb-run -a python benchmarks/rss_floor.py [--model NAME] [--batch 32]``.
Memory only, no timings: the numbers do not depend on the CPU's load.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path

#: (group, regex on the mapped file's path), first match wins
GROUPS = (
    ("CUDA libraries", r"/nvidia/|cuda|cudnn|nccl|cusparse|cufft|curand|nvrtc|nvJit"),
    ("torch CPU libraries", r"/torch/"),
    ("triton", r"/triton/"),
    ("numba / llvmlite", r"llvmlite|numba"),
    ("Mesa (libLLVM, dri, libGL)", r"libLLVM|/dri/|libGL|libgallium|libglapi"),
    ("Qt", r"PySide6|shiboken|PyQt"),
)


def rollup_mb() -> tuple[float, float]:
    """(anonymous, mapped files) resident MB of this process."""
    d = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, *rest = line.split()
        if key in ("Rss:", "Anonymous:"):
            d[key] = int(rest[0]) / 1024
    return d["Anonymous:"], d["Rss:"] - d["Anonymous:"]


def mapped_files_mb() -> dict[str, float]:
    """Resident MB per mapped file (``/proc/self/smaps``)."""
    out: dict[str, float] = defaultdict(float)
    name = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = parts[5] if len(parts) > 5 else ""
        elif parts and parts[0] == "Rss:" and name.startswith("/"):
            out[name] += int(parts[1]) / 1024
    return out


class Steps:
    """Prints one row per step: RSS after it, what it added, the packages it imported."""

    def __init__(self) -> None:
        self.last, self.mods = rollup_mb(), set(sys.modules)
        print("| step | RSS MB | + anonymous / + mapped MB | new modules (top packages) |\n|---|---|---|---|")

    def __call__(self, name: str) -> None:
        (a, f), (a0, f0) = rollup_mb(), self.last
        new = set(sys.modules) - self.mods
        top = ", ".join(f"{p} {n}" for p, n in Counter(m.split(".")[0] for m in new).most_common(6))
        print(f"| {name} | {a + f:.0f} | +{a - a0:.0f} / +{f - f0:.0f} | {len(new)}: {top} |", flush=True)
        self.last, self.mods = (a, f), set(sys.modules)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pathdistill-student")
    p.add_argument("--batch", type=int, default=32, help="tiles of the one forward (0: none)")
    p.add_argument("--top", type=int, default=12, help="largest mapped files listed")
    args = p.parse_args(argv)
    step = Steps()
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    QApplication.processEvents()
    step("napari.Viewer(show=True)")
    from napari_pathdistill._qt.embed_widget import EmbedWidget

    step("import the Embed widget's module")
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Embed")
    QApplication.processEvents()
    step("the Embed dock built")
    from napari_pathdistill.models import load_model

    model = load_model(args.model, device="cpu")
    widget.model.set_model(model)
    step(f"load_model({args.model!r})")
    if args.batch:
        import numpy as np

        tiles = np.full((args.batch, model.spec.tile_px, model.spec.tile_px, 3), 200, np.uint8)
        worker = threading.Thread(target=model.embed, args=(tiles,))
        worker.start()
        worker.join()
        step(f"one forward of {args.batch} tiles (worker thread)")
    files = mapped_files_mb()
    groups: dict[str, float] = defaultdict(float)
    for path, mb in files.items():
        groups[next((g for g, rx in GROUPS if re.search(rx, path)), "other files")] += mb
    print("\n| mapped files, grouped | resident MB |\n|---|---|")
    print("\n".join(f"| {g} | {mb:.0f} |" for g, mb in sorted(groups.items(), key=lambda kv: -kv[1])))
    print("\n| largest mapped files | resident MB |\n|---|---|")
    for path, mb in sorted(files.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {Path(path).name} | {mb:.1f} |")
    watched = ("torchvision", "torch._dynamo", "sympy", "triton", "matplotlib", "sklearn", "pandas", "h5py")
    print("\nimported:", ", ".join(m for m in watched if m in sys.modules))
    viewer.close()
    anon, mapped = rollup_mb()
    return {"anon_mb": anon, "mapped_mb": mapped, **groups}


if __name__ == "__main__":
    main()
