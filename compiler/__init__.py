"""cgsc: the Confidential Guest Spec Compiler."""

__version__ = "1.0.0"
