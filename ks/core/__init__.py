"""Pure logic: settings, errors, the state machine, what machines report and operators write, roles,
selectors, enrollment rules, request framing, rate limits, log formats, secrets at rest. No Flask, no SQL."""
