"""Errors the books raise. Each message is one line a user can act on."""


class LedgerError(Exception):
    """Base class: anything the books refuse, with a one-line reason."""


class InvalidInput(LedgerError, ValueError):
    """A value from outside (a file, an argument) is malformed."""


class UnbalancedEntry(LedgerError):
    """A journal entry whose postings do not sum to zero per currency."""


class InsufficientFunds(LedgerError):
    """A payout would commit more than the available balance."""


class IllegalTransition(LedgerError):
    """A batch or item status change the state machine does not allow."""


class PayoutsFrozen(LedgerError):
    """The kill switch is on."""


class NotFound(LedgerError, LookupError):
    """An id that names nothing in the books."""


class SchemaNotReady(LedgerError):
    """The books were never initialised, or need a migration."""


class IneligiblePayee(LedgerError):
    """A batch pays someone who is blocked, not sanctions-clear or not KYC-verified."""


class FundingReversed(LedgerError):
    """A batch pays an earning whose funding revenue was reversed, refunded or charged back."""


class MalformedFile(InvalidInput):
    """A landed file that cannot be read as its format: it goes to quarantine."""


class FooterMismatch(MalformedFile):
    """A settlement report whose footer counts or totals disagree with its body."""
