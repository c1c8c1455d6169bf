"""The no-op Python function of function_bench: what the runtime and the SDK cost, with
no import of the function's own."""


def handler(event, context):
    """The event back (binary: the same bytes)."""
    return event
