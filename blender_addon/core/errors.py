"""The add-on's one error type: what went wrong and how to fix it, shown in the panel and as a report."""

from __future__ import annotations


class AddonError(Exception):
    """Anything the person in front of Blender can act on: bad input, a misconfigured or unreachable
    backend, a result that cannot be imported. Shown as ``message`` (+ ``fix``), never as a traceback."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def report_text(self) -> str:
        return report_text(self.message, self.fix)


def report_text(message: str, fix: str | None) -> str:
    """'message (fix: fix)', the way reports and the status line show an error."""
    return message + (f" (fix: {fix})" if fix else "")
