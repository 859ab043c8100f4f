"""The application services beside the router: the outbox relay, the delivery ledger,
park-and-refer and the retry schedule."""
