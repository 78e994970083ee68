"""Exceptions raised by qasa for problems the user can fix or must know about.

Every error qasa raises on purpose is a :class:`QasaError`; the CLI prints its message on one line
(``error: ...``) and exits with status 1, as it does for every other failure (usage errors, the
file system, the QPU service). Messages name the offending value and the allowed range.
"""

from __future__ import annotations

__all__ = ["QasaError", "ProtocolError", "SamplerError", "DatasetError", "CredentialsError", "LeapError",
           "AnswerError"]


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


class LeapError(QasaError):
    """A call to the QPU service failed for good: an error not worth retrying (400, 401, 403, a
    FAILED problem), retries that ran out, or a problem that did not complete within its deadline.
    Every call finished before it is saved."""


class AnswerError(LeapError):
    """An answer does not hold what was asked for (variables, number of reads, values ±1): it is
    never counted; the call is fetched again or resubmitted."""
