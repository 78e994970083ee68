"""Exceptions raised by qasa for problems the user can fix.

Every error raised for bad input is a :class:`QasaError`; the CLI prints its message on one line
and exits with status 1. Messages name the offending value and the allowed range.
"""

from __future__ import annotations

__all__ = ["QasaError", "ProtocolError", "SamplerError", "DatasetError", "CredentialsError"]


class QasaError(Exception):
    """Base class of every error that qasa reports to the user."""


class ProtocolError(QasaError, ValueError):
    """A protocol is malformed or not executable on the chosen sampler."""


class SamplerError(QasaError):
    """A sampler cannot be built or reached (unknown backend, unknown solver...)."""


class CredentialsError(SamplerError):
    """No Leap credentials are configured for the real QPU."""


class DatasetError(QasaError):
    """A dataset on disk is missing, corrupt, or belongs to another protocol."""
