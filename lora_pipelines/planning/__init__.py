"""What the sensors decide, as plain functions: which trainings and generations to request, with which run keys.

A run key names exactly what makes a run legitimate (Dagster never runs the same key twice, failed or not):
the character's photo set for training, the call id for finishing a training, the job ids and attempt for
generation. Planning only reads; what a tick changes (the reaper) is a separate step the sensor calls.
"""
