"""_qt package."""
