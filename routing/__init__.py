"""statement-router: the domain, the state store, the router, the API and the CLI."""
