"""The app's own command: `flask users create`. `flask worker` (jobs.cli) and the development
commands (`flask stack`, `flask demo`, `flask bench`; mailing.devtools.cli) are found by Flask
through the `flask.commands` entry points in pyproject.toml."""

from __future__ import annotations

import secrets

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup

from .extensions import db
from .models import Role, User


def create_user(email: str, role: str, password: str | None = None) -> tuple[User, str]:
    password = password or secrets.token_urlsafe(12)
    user = User(email=email.strip().lower(), role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user, password


def register_cli(app: Flask) -> None:
    users = AppGroup("users", help="Manage users.")

    @users.command("create")
    @click.argument("email")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.EDITOR.value)
    @click.option("--password", default=None, help="Generated and printed when omitted.")
    def users_create(email: str, role: str, password: str | None) -> None:
        """Add a user with a role."""
        if db.session.scalar(sa.select(User).where(User.email == email.strip().lower())):
            raise click.ClickException(f"{email} already exists")
        _user, pw = create_user(email, role, password)
        click.echo(f"created {email} ({role}) password: {pw}")

    app.cli.add_command(users)

    bounce_cli = AppGroup("bounces", help="Late bounces and complaints.")

    @bounce_cli.command("serve")
    @click.option("--host", default="0.0.0.0", show_default=True)
    @click.option("--port", default=2525, show_default=True, type=int)
    def bounces_serve(host: str, port: int) -> None:
        """The SMTP listener a bounce domain's MX points at (mailing/bounces_smtp.py)."""
        from .bounces_smtp import serve

        serve(app, host, port)

    app.cli.add_command(bounce_cli)
