"""inference package."""

from napari_pathdistill._native import preload_triton

preload_triton()  # torch may be imported below after napari started Qt/OpenGL (see _native)
