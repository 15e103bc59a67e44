"""Types and helpers shared by every service (no service imports another service's internals)."""
