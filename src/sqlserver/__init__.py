"""sqlserver: a PostgreSQL-protocol server over SQLite, prepared for live patching."""
