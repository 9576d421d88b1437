"""Schemathesis hooks for Aegis: every error answer must be in the CONTRACT.md envelope."""

import schemathesis


@schemathesis.check
def error_envelope(ctx, response, case):
    """4xx and 5xx answers are `{"error": {"code", "message", "request_id"}}` (CONTRACT.md)."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
        raise AssertionError(f"{response.status_code} body is not JSON: {exc}") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(f"{response.status_code} without an `error` object: {body!r}")
    for field in ("code", "message", "request_id"):
        if not isinstance(error.get(field), str) or not error[field]:
            raise AssertionError(f"{response.status_code}: `error.{field}` missing or empty: {body!r}")
    return None
