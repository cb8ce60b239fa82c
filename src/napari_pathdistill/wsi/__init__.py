"""wsi package."""
