"""The fleet domain: what operators do to hosts (edits, changes, deploys, selectors, timeouts, tokens,
webhooks, the history as a stream) — given a session or a database, never a request."""
