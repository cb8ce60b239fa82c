"""Regenerate the widget screenshots of docs/widgets.md on the real slides of ../shared/data.

Run from the repository root: ``xvfb-run -a python docs/images/make_screenshots.py``. Uses the shipped
``pathdistill-student`` and the ImageNet EfficientNet-Lite2 teacher (both available offline).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill._qt.tissue_widget import TissueWidget

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent


def wait(widget, timeout: float = 600) -> None:
    t0 = time.time()
    while widget.runner.running and time.time() - t0 < timeout:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()


def viewer_with(path: Path, widget_cls, name: str):
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(str(path), plugin="napari-pathdistill")
    widget = widget_cls(viewer)
    viewer.window.add_dock_widget(widget, name=name, area="right")
    if hasattr(widget, "slide"):
        widget.slide.value = viewer.layers[0]
    return viewer, widget


def shoot(viewer, name: str) -> None:
    for _ in range(10):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False)
    quantized(Image.fromarray(img[..., :3])).save(OUT / name, optimize=True)
    print("wrote", OUT / name, (OUT / name).stat().st_size // 1024, "KB")


def quantized(rgb: Image.Image, exact: int = 20) -> Image.Image:
    """A 256-colour copy of ``rgb`` (small PNGs) whose palette holds the first ``exact`` cluster colours as they
    are, so the Embed legend's swatches keep the colours the map is drawn in (a plain 256-colour quantisation
    remapped them to whatever the canvas's colours made the palette)."""
    from napari_pathdistill.inference.palette import cluster_rgb255

    fixed = [c for rgb3 in cluster_rgb255(exact) for c in rgb3]
    rest = rgb.quantize(256 - exact, dither=Image.Dither.NONE).getpalette()[: 3 * (256 - exact)]
    palette = Image.new("P", (1, 1))
    palette.putpalette(fixed + rest)
    return rgb.quantize(palette=palette, dither=Image.Dither.NONE)


def embed() -> None:
    viewer, w = viewer_with(DATA / "wsi" / "CMU-1-Small-Region.svs", EmbedWidget, "Embed slide")
    w.k.value, w.min_tissue.value = 5, 0.3
    w.run()
    wait(w)
    layers = viewer.layers
    clusters, pca = layers["CMU-1-Small-Region.svs clusters"], layers["CMU-1-Small-Region.svs embedding map"]
    # as a click does: the similar tiles and the tile search (its summary line, its heatmap layer)
    w.search_tile(len(w.result.features) // 2, clusters)
    layers["CMU-1-Small-Region.svs similarity"].visible = False  # its heatmap would hide the clusters
    pca.visible = False  # show the clusters over the slide; the embedding map stays in the list
    shoot(viewer, "embed_widget.png")
    pca.visible, clusters.visible = True, False
    shoot(viewer, "embed_widget_pca.png")
    viewer.close()


def attention() -> None:
    """Defaults (EfficientNet-Lite2 Grad-CAM teacher vs the bundled student), whole CMU slide, then a zoomed view."""
    viewer, w = viewer_with(DATA / "wsi" / "CMU-1-Small-Region.svs", AttentionWidget, "Attention")
    viewer.window.resize(1900, 1000)  # two grid cells wide enough for their labels
    w.region.value = "whole slide"
    w.run()
    wait(w)
    viewer.reset_view()
    print("whole slide:", w.summary.value)
    tiles = viewer.layers["attention tiles"]  # the status bar names the hovered tile: as if hovering one
    viewer.cursor.position = tuple(tiles.data_to_world(tiles.data[len(tiles.data) // 2]))
    viewer.mouse_over_canvas = True
    viewer.update_status_from_cursor()
    print("hovered:", viewer.status)
    shoot(viewer, "attention_widget.png")
    viewer.scene.camera.center = (0, 900.0, 500.0)
    viewer.scene.camera.zoom *= 2.5
    w.region.value, w.student_weights.value = "tiles in current view", "random init"
    w.run()
    wait(w)
    print("zoomed view, random-init student:", w.summary.value)
    shoot(viewer, "attention_widget_random_init.png")
    viewer.close()


def similarity() -> None:
    """OS-2 NDPI (A) vs VSI (B), default tissue settings: cosine overlay + colour bar over registered B (blend),
    then the checkerboard view."""
    pair = DATA / "paired" / "openslide_OS-2_ndpi_vs_vsi"
    viewer, w = viewer_with(pair / "OS-2-ndpi.ome.tif", SimilarityWidget, "Similarity")
    viewer.open(str(pair / "OS-2-vsi.ome.tif"), plugin="napari-pathdistill")
    w.slide_a.value, w.slide_b.value = viewer.layers[0], viewer.layers[1]
    viewer.layers[1].visible = False
    w.top_k.value = 1
    w.run()
    wait(w)
    viewer.reset_view()
    shoot(viewer, "similarity_widget.png")
    w.view_mode.value = "checkerboard"
    viewer.layers[-1].visible = False  # the cosine overlay: look at the registration alone
    shoot(viewer, "similarity_checkerboard.png")
    viewer.close()


def similarity_small_pool() -> None:
    """OS-2 with 224 um tiles: 4 matched tiles, top-5 over 7 candidates is flagged as not meaningful."""
    pair = DATA / "paired" / "openslide_OS-2_ndpi_vs_vsi"
    viewer, w = viewer_with(pair / "OS-2-ndpi.ome.tif", SimilarityWidget, "Similarity")
    viewer.open(str(pair / "OS-2-vsi.ome.tif"), plugin="napari-pathdistill")
    w.slide_a.value, w.slide_b.value = viewer.layers[0], viewer.layers[1]
    viewer.layers[1].visible = False
    w.mpp.value, w.top_k.value, w.view_mode.value = 1.0, 5, "hidden"  # 224 um tiles
    w.run()
    wait(w)
    viewer.reset_view()
    shoot(viewer, "similarity_topk_flag.png")
    viewer.close()


def similarity_birl() -> None:
    """BIRL H&E vs proSPC IHC: plain 5 % JPEGs opened by napari's reader, um/px override, automatic registration."""
    d = DATA / "paired" / "birl_anhir" / "lesions_"
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    for name in ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg"):
        viewer.open(str(d / name), plugin="napari")
    w = SimilarityWidget(viewer)
    viewer.window.add_dock_widget(w, name="Similarity", area="right")
    w.slide_a.value, w.slide_b.value = viewer.layers[0], viewer.layers[1]
    viewer.layers[1].visible = False
    # a stand-in scale of 1 um/px for both 5 % images; 224 px tiles at 0.5 um/px = 112 image px, ~30 tiles
    w.mpp_override.value, w.mpp.value, w.min_tissue.value, w.top_k.value = 1.0, 0.5, 0.3, 1
    w.run()
    wait(w)
    viewer.reset_view()
    shoot(viewer, "similarity_widget_birl.png")
    viewer.close()


def evaluate() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    w = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w, name="Evaluate", area="right")
    w.task.value = "teacher vs student (tiles folder)"
    w.inputs.value = DATA / "tiles" / "histolab_tiles"
    w.teacher.choice.value = "efficientnet-lite2-imagenet"
    w.run()
    wait(w)
    shoot(viewer, "evaluate_widget.png")
    viewer.close()


def evaluate_robustness() -> None:
    """Robustness over docs/pairs/birl_anhir_pairs.csv (plain JPEGs, 0.5 um/px override) plus a missing slide:
    the bad pair fails alone, named in the summary and the table."""
    import tempfile

    from napari_pathdistill.evaluation.manifest import read_pairs

    pairs = read_pairs(ROOT / "docs" / "pairs" / "birl_anhir_pairs.csv")
    csv_path = Path(tempfile.mkdtemp()) / "birl_pairs_and_a_missing_slide.csv"
    rows = [f"{a.resolve()},{b.resolve()}" for a, b in pairs] + [f"missing_slide.tif,{pairs[0][1].resolve()}"]
    csv_path.write_text("slide_a,slide_b\n" + "\n".join(rows) + "\n")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    w = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(w, name="Evaluate", area="right")
    w.task.value = "robustness (slide pairs CSV)"
    w.inputs.value, w.mpp_override.value = csv_path, 0.5
    w.run()
    wait(w)
    shoot(viewer, "evaluate_robustness_birl.png")
    viewer.close()


def tissue() -> None:
    """Tissue and tile grid on CMU-1-Small-Region (H&E), defaults."""
    viewer, w = viewer_with(DATA / "wsi" / "CMU-1-Small-Region.svs", TissueWidget, "Tissue and tile grid")
    w.run()
    wait(w)
    viewer.reset_view()
    shoot(viewer, "tissue_widget.png")
    viewer.close()


def tissue_grid() -> None:
    """The tile grid of CMU-1-Small-Region zoomed in, one tile hovered: the status bar names its tile, x, y and
    tissue fraction."""
    viewer, w = viewer_with(DATA / "wsi" / "CMU-1-Small-Region.svs", TissueWidget, "Tissue and tile grid")
    w.run()
    wait(w)
    tiles = viewer.layers[-1]
    viewer.layers.selection.active = tiles
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.6
    rows, cols = (
        (tiles.data > 0) & ((tiles.data - 1) // 2 == 26)
    ).nonzero()  # tile 26 (values 2 t + 1, 2 t + 2)
    viewer.cursor.position = tuple(tiles.data_to_world((rows.mean(), cols.mean())))
    viewer.update_status_from_cursor()
    shoot(viewer, "tissue_grid.png")
    viewer.close()


def tissue_ihc() -> None:
    """OS-2 Ki67 (pale IHC, 0.23 um/px): threshold preview at the default, then the grid."""
    pair = DATA / "paired" / "openslide_OS-2_ndpi_vs_vsi"
    viewer, w = viewer_with(pair / "OS-2-ndpi.ome.tif", TissueWidget, "Tissue and tile grid")
    w.start_preview()
    wait(w)
    viewer.reset_view()
    shoot(viewer, "tissue_preview_ihc.png")
    w.run()
    wait(w)
    shoot(viewer, "tissue_widget_ihc.png")
    viewer.close()


if __name__ == "__main__":
    everything = ["embed", "attention", "similarity", "similarity_small_pool", "similarity_birl", "evaluate",
                  "evaluate_robustness", "tissue", "tissue_grid", "tissue_ihc"]  # fmt: skip
    for name in sys.argv[1:] or everything:
        globals()[name]()
