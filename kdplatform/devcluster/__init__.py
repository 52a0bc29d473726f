"""A laptop-sized cluster of real processes: S3, PostgreSQL, a tracking server, Ray nodes."""
