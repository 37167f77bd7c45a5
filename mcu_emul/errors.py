"""User-facing errors: one line, naming the problem and the value, non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (file, option, value); printed as one line."""

    exit_code = 2


class CapacityError(UserError):
    """Something does not fit in the chip's on-chip memory."""
