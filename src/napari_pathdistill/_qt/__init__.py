"""Qt layer: dock widgets over the pure core.

Widgets here may import torch after napari has started Qt and OpenGL; ``preload_triton`` makes that safe
(see :mod:`napari_pathdistill._native`).
"""

from napari_pathdistill._native import preload_triton

preload_triton()
