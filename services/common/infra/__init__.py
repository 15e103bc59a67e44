"""Configuration, gRPC, inference clients, storage, tracing, deadlines, domain <-> proto (wire)."""
