"""Distillation training package (DINO + iBOT, H0-mini recipe)."""
