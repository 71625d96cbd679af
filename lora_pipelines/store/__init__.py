"""App database (tables, migrations, one module per repository) and object stores (`objects/`: local folder, S3/R2)."""
