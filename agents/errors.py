"""The `error` objects of turns that the server, not the model, ended."""

INTERRUPTED_ERROR = {
    "code": "interrupted",
    "message": "The server stopped while this turn was running; the partial answer was kept.",
    "retryable": True,
}
NOT_STARTED_ERROR = {
    "code": "interrupted",
    "message": "The server lost this turn before it started; send the message again.",
    "retryable": True,
}
