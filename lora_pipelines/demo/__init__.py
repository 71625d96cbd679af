"""`lora-pipelines demo`: the whole system end to end on embedded defaults (`scenario`), on photos from a registry
package (`photos`), with the sensors evaluated and their runs executed in this process (`sensor_runs`)."""
