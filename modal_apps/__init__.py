"""The GPU side on Modal: LoRA training (`training.py`) and LoRA generation endpoints (`generation.py`).

`training.py` and `generation.py` import only `modal` at module level so `modal deploy` works from a
machine without torch; everything else here is plain Python behind seams that tests replace.
"""
