"""Meta-architecture, schedules, checkpointing and the training loop."""
