"""Publishing: the warehouse (SQLAlchemy; SQLite by default, PostgreSQL in production) and the
champion/challenger decision."""
