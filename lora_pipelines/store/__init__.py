"""App database (tables, migrations, repositories) and object stores (local folder, S3/R2)."""
