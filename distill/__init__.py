"""Distillation trainer: configs, models, losses, generation and the training loop."""
