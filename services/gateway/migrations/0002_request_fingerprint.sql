-- What a submission asked for (SHA-256 of the request as sent): the same client_request_id with a different
-- request is refused instead of answered with the first job (AIP-155). Rows from before it have ''.
ALTER TABLE jobs ADD COLUMN request_sha256 text NOT NULL DEFAULT '';
