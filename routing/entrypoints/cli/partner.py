"""``statement-router partner secret``: a webhook signing secret to give a partner.

The secret goes to stdout alone (one line), so it can be written straight to the file the
connectors file names (``umask 077; statement-router partner secret > acd_whsec``); what
to do with it goes to stderr. docs/delivery.md, "Webhook contract", says who creates it
and how it rotates.
"""

from __future__ import annotations

import typer

partner_app = typer.Typer(help="Partners' webhook signing secrets.", no_args_is_help=True)


@partner_app.command("secret")
def partner_secret() -> None:
    """Make a webhook signing secret (whsec_<base64 of 32 random bytes>) for a partner."""
    # Imported here: adapters.delivery loads the SFTP and HTTP clients, which a CLI call
    # that only prints help must not pay for (tests/e2e/test_cli_help.py).
    from adapters.delivery.partner_secret import new_webhook_secret

    secret = new_webhook_secret()
    typer.echo(
        "# A new webhook signing secret (stdout, shown once). Store it in the file or the\n"
        "# variable the connector's secret_file / secret_env names, and give it to the\n"
        "# partner out of band. To rotate: list it first, the old one second\n"
        "# (secrets = [new, old]); remove the old one once the partner has switched.",
        err=True,
    )
    typer.echo(secret)
