"""The backing Postgres: its lifecycle, the ``sieve`` catalog schema and connections to it."""
