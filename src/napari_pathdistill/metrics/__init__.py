"""Metrics on features and maps (numpy/torch only): the leaf that inference and evaluation both import.

* :mod:`.pairs` - PLISM pair metrics (mean cosine, top-k retrieval) as plismbench computes them;
* :mod:`.agreement` - linear CKA, k-NN overlap and attention-map agreement between two models;
* :mod:`.features` - cosine to one tile, PCA scores and colours, k-means labels of (N, D) embeddings.
"""

from napari_pathdistill._native import preload_triton

preload_triton()  # torch may be imported below after napari started Qt/OpenGL (see _native)
