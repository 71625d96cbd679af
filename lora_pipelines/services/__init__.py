"""Use cases that combine the store, the GPU backends and the face tools. Plain Python; Dagster only wires them."""
