"""Sensors: new_characters, training_completion, pending_generations."""
