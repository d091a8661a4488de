"""What operators use: health checking, graceful shutdown, the admin service and client, the CLI."""
