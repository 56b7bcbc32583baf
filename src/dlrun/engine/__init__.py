"""The training engine: one loop (trainer.py), callbacks, checkpoints, devices."""
