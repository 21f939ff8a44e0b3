"""Entry point for `flask` and WSGI servers: `waitress-serve app:app`."""

from mailing import create_app

app = create_app()
