"""Face detection, embeddings, training datasets and consistency scoring (dlib; no Dagster)."""
