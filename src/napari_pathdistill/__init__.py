"""napari-pathdistill: see what pathology foundation models and their distilled students learned."""

__version__ = "0.1.0"
