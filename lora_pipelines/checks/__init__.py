"""Asset checks on generation outputs (the training checks live with their assets)."""
