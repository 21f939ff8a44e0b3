"""Tools for developing Outbox (benchmarks, throw-away servers); the app never imports them."""
