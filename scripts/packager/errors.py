"""The packager's one failure."""


class PackageError(Exception):
    """A violation that makes the package unusable; the message is meant for humans."""
