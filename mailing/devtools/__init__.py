"""Tools for developing Outbox: the `make run` launcher (`flask stack`), the demo seeder,
the benchmarks and a throw-away PostgreSQL cluster; the app never imports them."""
