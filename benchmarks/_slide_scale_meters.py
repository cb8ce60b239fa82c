"""Meters of ``benchmarks/slide_scale.py`` (RSS, reader open in a fresh interpreter, main-thread stall, CPython's
full garbage collections) and its markdown table: every measurement beside its target (met / NOT met)."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"stall_ms": 100, "peak_rss_gb": 1.5, "reopen_s": 2.0, "click_ms": 200, "cuda_tiles_s": 5000}


_OPEN = """import json, os, sys, time
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
from napari_pathdistill._reader import get_reader
r0, t0 = rss(), time.perf_counter()
layers = get_reader(sys.argv[1])(sys.argv[1])
t = time.perf_counter() - t0
print(json.dumps({"open_s": t, "rss_delta_mb": (rss() - r0) / 2**20, "levels": len(layers[0][0])}))"""


def peak_rss_gb() -> float:
    """Peak resident set of this process (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gb() -> float:
    """Current resident set of this process (GB)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def rss_parts_gb() -> dict[str, float]:
    """Current resident set split as the kernel counts it (GB): ``anon`` (heap, Python objects, arrays: this
    process's own) and ``file`` (mapped files, mostly shared libraries: torch's CUDA libraries, Qt, Mesa)."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            parts[key[3:].lower()] = int(value.split()[0]) / 2**20
    return {"anon": parts.get("anon", 0.0), "file": parts.get("file", 0.0) + parts.get("shmem", 0.0)}


def reader_open(path: Path) -> dict:
    """(a) open time and RSS delta of our reader in a fresh interpreter."""
    res = subprocess.run([sys.executable, "-c", _OPEN, str(path)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


class StallMeter:
    """The largest gap between ticks of a 10 ms QTimer on the main thread (a stalled event loop)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.max_gap, self._last = 0.0, time.perf_counter()
        self.gaps: list[tuple[float, float]] = []  # (start, end) of every gap > 50 ms
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self._last > 0.05:
            self.gaps.append((self._last, now))
        self.max_gap, self._last = max(self.max_gap, now - self._last), now

    def start(self) -> None:
        self.max_gap, self._last, self.gaps = 0.0, time.perf_counter(), []
        self.timer.start()

    def stop(self) -> float:
        """Stop ticking; the time since the last tick counts as a gap (work done in the caller's last
        ``processEvents``, e.g. a result shown when a worker finishes, would otherwise never be measured)."""
        self._tick()
        self.timer.stop()
        return self.max_gap

    def longest_outside(self, spans: list[tuple[float, float]]) -> float:
        """The longest gap that overlaps none of ``spans`` (e.g. napari creating a layer)."""
        free = [b - a for a, b in self.gaps if not any(a < e and s < b for s, e in spans)]
        return max(free, default=0.0)


class GcMeter:
    """(start, end) of every full (generation 2) CPython garbage collection, on any thread: a full collection
    holds the GIL, so it stalls the main thread for as long as it walks every tracked object of the process."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.spans.append((self._start, time.perf_counter()))

    def start(self) -> None:
        self.spans = []
        gc.callbacks.append(self._callback)

    def stop(self) -> list[tuple[float, float]]:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        return self.spans


def tracked_objects() -> int:
    """Objects CPython's cyclic collector walks in a full collection (all generations)."""
    return len(gc.get_objects())


def _ms(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.0f} median / {pair[1]:.0f} max"


def table(r: dict) -> str:
    """Markdown table of the run with the targets."""
    e, t = r.get("embed", {}), TARGETS
    rate = e["tiles"] / e["total_s"] if e.get("total_s") else float("nan")
    grid = e.get("grid_tiles", 0)
    rows = [
        ("(a) reader open / RSS delta", f"{r['open']['open_s']:.2f} s / {r['open']['rss_delta_mb']:.0f} MB", ""),
        ("(b) first map update", f"{e.get('first_map_s') or float('nan'):.1f} s", ""),
        ("(b) embed", f"{e.get('tiles')} of {grid} tiles in {e.get('total_s', float('nan')):.0f} s = "
         f"{rate:.1f} tiles/s" + (f"; whole grid extrapolated {grid / rate:.0f} s" if e.get("cancelled") else ""),
         ""),
        ("(b) Embed press: the slide's grid geometry and napari adding the two empty map layers (main thread, "
         "once, before the run)", f"{e.get('press_ms', float('nan')):.0f} ms", ""),
        ("(b) longest main-thread stall while embedding (after the press)", f"{e.get('stall_ms', float('nan')):.0f} ms",
         f"< {t['stall_ms']} ms: {'met' if e.get('stall_ms', 1e9) < t['stall_ms'] else 'NOT met'}"),
        ("(b) main-thread gaps while embedding: over 50 ms (their median) / over 100 ms",
         f"{e.get('gaps_over_50', 0)} ({e.get('gap_median_ms', float('nan')):.0f} ms) / {e.get('gaps_over_100', 0)}",
         ""),
        ("(b) full CPython garbage collections during the embed (process-wide; objects tracked)",
         f"{len(e.get('gc_ms', []))}, longest {max(e.get('gc_ms', []), default=0):.0f} ms "
         f"({e.get('tracked_objects', 0):,} objects)", ""),
        ("(b) napari adding the map / clusters layers (main thread, once each; at the press unless they existed)",
         ", ".join(f"{ms:.0f} ms" for ms in e.get("layer_adds_ms", [])), ""),
        ("(b) longest stall outside the full collections", f"{e.get('stall_nogc_ms', float('nan')):.0f} ms",
         f"< {t['stall_ms']} ms: {'met' if e.get('stall_nogc_ms', 1e9) < t['stall_ms'] else 'NOT met'}"),
        ("(b) longest stall outside the full collections and the layer additions",
         f"{e.get('stall_other_ms', float('nan')):.0f} ms",
         f"< {t['stall_ms']} ms: {'met' if e.get('stall_other_ms', 1e9) < t['stall_ms'] else 'NOT met'}"),
        ("(b) RSS before embed; peak after embed / end of run", f"{r.get('rss_before_embed_gb', float('nan')):.2f}; "
         f"{r.get('peak_rss_after_embed_gb', float('nan')):.2f} / "
         f"{r.get('peak_rss_gb', float('nan')):.2f} GB",
         f"< {t['peak_rss_gb']} GB: {'met' if r.get('peak_rss_gb', 1e9) < t['peak_rss_gb'] else 'NOT met'}"),
    ]  # fmt: skip
    for key, when in (("rss_parts_before_embed", "before embed"), ("rss_parts_after_embed", "after embed"),
                      ("rss_parts_end", "end of run")):  # fmt: skip
        if key in r:
            rows.append((f"(b) RSS {when}: anonymous (this process's heap) / mapped files (shared libraries)",
                         f"{r[key]['anon']:.2f} / {r[key]['file']:.2f} GB", ""))  # fmt: skip
    if "reopen_widget" in r:
        s = r["reopen_widget"]["total_s"]
        rows.append((f"(c) cached re-open, Embed widget ({grid} tiles)", f"{s:.2f} s",
                     f"< {t['reopen_s']} s: {'met' if s < t['reopen_s'] else 'NOT met'}"))  # fmt: skip
    if "reopen_100k_s" in r:
        s = r["reopen_100k_s"]
        rows.append((f"(c) re-open {r['click_tiles']:,}-row feature file with its stored map (reader)",
                     f"{s:.2f} s", f"< {t['reopen_s']} s: {'met' if s < t['reopen_s'] else 'NOT met'}"))  # fmt: skip
    if "reopen_100k_nomap_s" in r:
        rows.append(("(c) the same rows without a stored map (CLAM/TRIDENT, older files: PCA + k-means run)",
                     f"{r['reopen_100k_nomap_s']:.2f} s", ""))  # fmt: skip
    if "rss_after_nomap_removed_gb" in r:
        rows.append(("(c) peak RSS so far, after the no-map open (its PCA + k-means) / RSS once its layers are "
                     "removed", f"{r['peak_rss_after_nomap_gb']:.2f} / {r['rss_after_nomap_removed_gb']:.2f} GB",
                     ""))  # fmt: skip
    if "rss_after_reopen_gb" in r:
        rows.append(("(c) RSS with the slide's map and the 100k-row map open", f"{r['rss_after_reopen_gb']:.2f} GB",
                     ""))  # fmt: skip
    for key, what in (("widget_click_compute_ms", "Embed widget click -> similar tiles, before repaint"),
                      ("widget_click_ms", "Embed widget click -> similar tiles, repainted"),
                      ("heatmap_click_ms", "TileSearchPanel click -> heatmap")):  # fmt: skip
        if key in r:
            ok = r[key][0] < t["click_ms"]
            rows.append((f"(d) {what} ({r['click_tiles']:,} tiles)", _ms(r[key]) + " ms",
                         f"< {t['click_ms']} ms (median): {'met' if ok else 'NOT met'}"))  # fmt: skip
    if "widget_first_click_ms" in r:
        rows.append(("(d) the first click of the session, repainted (adds the similar-tiles and heatmap layers)",
                     f"{r['widget_first_click_ms']:.0f} ms", "in the max above, not in the median"))  # fmt: skip
    base = r["pan_none"][1] if "pan_none" in r else None
    if base is not None:
        rows.append(("(e) pan frame, no grid layer (the same viewer: the baseline)",
                     f"{base:.0f} median / {r['pan_none'][2]:.0f} max ms", ""))  # fmt: skip
    for key in ("pan_real", "pan_synthetic"):
        if key in r:
            n, med, mx = r[key]
            ratio = f"; x{med / base:.2f} of no grid" if base else ""
            rows.append(
                (
                    f"(e) pan frame, tile grid shown ({n:,} tiles)",
                    f"{med:.0f} median / {mx:.0f} max ms{ratio}",
                    "",
                )
            )
    return render(rows + cuda_rows(r))


def cuda_rows(r: dict) -> list[tuple[str, str, str]]:
    """The (f) rows (``cuda_throughput``'s keys), or none when (f) did not run."""
    if "cuda_tiles_s" not in r:
        return []
    target = TARGETS["cuda_tiles_s"]
    ok = r["cuda_tiles_s"] >= target
    return [
        ("(f) H0-mini-shape ViT-B/14 embed_slide, CUDA", f"{r['cuda_tiles_s']:.0f} tiles/s ({r['cuda_tiles']} tiles "
         f"in {r['cuda_s']:.1f} s, second run; tissue detection, reading, model, writing)",
         f">= {target}: {'met' if ok else 'NOT met'}"),
        ("(f) the same, between the first and the last batch", f"{r['cuda_steady_tiles_s']:.0f} tiles/s", ""),
    ]  # fmt: skip


def render(rows: list[tuple[str, str, str]]) -> str:
    """(measurement, result, target) rows as a Markdown table."""
    lines = ["| measurement | result | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])
