"""GPU backends behind one interface: simulated, Modal, ComfyUI."""
