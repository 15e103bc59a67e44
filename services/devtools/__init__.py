"""Development and test tooling, not on any service's runtime path: real local servers (PostgreSQL,
S3, Triton), the whole platform on one machine (platform.LocalPlatform), the proto code generator."""
