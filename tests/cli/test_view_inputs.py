"""``pathdistill view`` on what a user may give it besides a slide: a plain JPEG/PNG (which the widgets take as a
slide in pixels) opens with napari's own reader, and a file no reader of ours opens is refused in our words.

Before, both failed with napari's reader-selection jargon: ``Given reader 'napari-pathdistill' is not a compatible
reader for [...]. Available readers for [...] are: ['napari'].``
"""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_pathdistill.cli.main import build_parser, main

pytestmark = pytest.mark.napari


def test_view_of_a_plain_jpeg_opens_it_and_the_widgets_take_it(
    monkeypatch: pytest.MonkeyPatch, own_napari_app, shared_data: Path
) -> None:
    from napari_pathdistill._qt._layers import is_slide_layer
    from napari_pathdistill.cli.view import open_viewer

    monkeypatch.setenv("PATHDISTILL_ASSOCIATED", "")
    jpeg = shared_data / "paired" / "birl_anhir" / "lesions_" / "Izd2-29-041-w35_HE.jpg"
    viewer, docks = open_viewer(build_parser().parse_args(["view", str(jpeg), "--widgets", "Embed slide"]))
    try:
        (layer,) = viewer.layers
        assert layer.rgb and layer.data.shape == (733, 890, 3) and is_slide_layer(layer)
        assert docks[0][1].slide.value is layer  # the Embed dock offers it as its slide
    finally:
        viewer.close()


@pytest.mark.parametrize("name,content", [("notes.txt", b"hello\n"), ("random.tif", b"\x01\x02" * 500)])
def test_view_of_a_file_that_is_no_slide_says_so(
    tmp_path: Path, capsys, own_napari_app, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["view", str(path), "--screenshot", str(tmp_path / "v.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {name} is neither a whole-slide image nor a tile-feature file PathDistill opens"
    )
    assert "Supported:" in err and "JPEG/PNG" in err
    assert "reader" not in err  # napari's "Given reader ... is not a compatible reader"
    assert not (tmp_path / "v.png").exists()


def test_each_reader_warning_is_one_line_on_the_terminal(
    monkeypatch: pytest.MonkeyPatch, own_napari_app, tcga_svs: Path, capsys
) -> None:
    """napari prints each notification on the console itself (``WARNING: ...`` on stdout, its default console
    notification level); ``view`` printed its own ``warning: ...`` line on stderr too: every warning twice."""
    from napari.settings import get_settings
    from napari.utils.notifications import NotificationSeverity

    from napari_pathdistill.cli.view import open_viewer

    monkeypatch.setenv("PATHDISTILL_ASSOCIATED", "")
    for level, printed_by_napari in ((NotificationSeverity.NONE, True), (NotificationSeverity.ERROR, False)):
        monkeypatch.setattr(get_settings().application, "console_notification_level", level)
        viewer, _ = open_viewer(build_parser().parse_args(["view", str(tcga_svs), "--widgets", ""]))
        viewer.close()
        out, err = capsys.readouterr()
        said = [line for line in (out + err).splitlines() if "has no pixel size (MPP)" in line]
        assert len(said) == 1, said
        assert said[0].startswith("WARNING: " if printed_by_napari else "warning: ")


def test_view_of_a_folder_of_slides_names_the_slide_files_in_it(
    tmp_path: Path, capsys, own_napari_app, cmu_svs: Path
) -> None:
    """A folder that is no DICOM series gets the reader's message naming the slide files to open instead, not
    'is neither a whole-slide image nor a tile-feature file'."""
    folder = tmp_path / "case_12"
    folder.mkdir()
    (folder / "CMU-1-Small-Region.svs").symlink_to(cmu_svs)
    assert main(["view", str(folder), "--screenshot", str(tmp_path / "v.png")]) == 1
    assert capsys.readouterr().err == (
        f"error: {folder} is a folder, not a slide file, and holds no DICOM whole-slide series; open the slide "
        "file in it instead: CMU-1-Small-Region.svs.\n"
    )
