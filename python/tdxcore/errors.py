"""tdxcore's exceptions: one base class, TdxError.

Plain argument errors are also ValueError (a bad value) or TypeError (a wrong type), so callers
can catch either the tdxcore class or the built-in one.
"""


class TdxError(Exception):
    """Base class of every error tdxcore raises."""


class ConfigError(TdxError, ValueError):
    """A value the model cannot accept: unknown level, gfn outside every memslot, overlapping
    memslots, an unknown option name."""


class ArgumentTypeError(TdxError, TypeError):
    """An argument of the wrong type."""


class InvalidOperation(TdxError):
    """A well-formed request that the kernel would refuse in the current state (an ACCEPT of
    shared memory, a guest operation before the TD is runnable)."""


class DeadlockError(TdxError):
    """An operation waited for a lock that nothing could release."""


class InternalError(TdxError):
    """A bug in tdxcore itself."""


class ResourceError(TdxError, MemoryError):
    """A request that needs more memory than the machine has, refused before allocating."""


class Interrupted(KeyboardInterrupt, TdxError):
    """Ctrl-C during a call. `partial` is what was covered: for `check`, the CheckResult of the
    search so far (its certificate's `cut_by` says "interrupted (Ctrl-C)")."""

    def __init__(self, message: str, partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial
