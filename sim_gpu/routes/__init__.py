"""The service's HTTP surfaces, one router each: Modal training, Modal generation endpoints, ComfyUI, controls."""
