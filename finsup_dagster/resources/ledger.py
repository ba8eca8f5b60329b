"""The ledger as a Dagster resource: one URL, from ``FINSUP_LEDGER_URL``."""

from functools import cached_property
from pathlib import Path

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.checkpoints import resolve_key


class LedgerResource(dg.ConfigurableResource):
    """Connection to the books (SQLite file or PostgreSQL) and finsup's home folder."""

    url: str = Field(description="SQLAlchemy URL of the ledger (FINSUP_LEDGER_URL)")
    home: str = Field(description="FINSUP_HOME: the landing zone and local state live here")
    audit_key: str = Field(
        default="",
        description="FINSUP_AUDIT_KEY: signs the chain checkpoints (empty: a key file under "
        "FINSUP_HOME/audit/, outside production)",
    )

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.url)

    def checkpoint_key(self) -> bytes | None:
        from finsup_dagster.settings import deployment

        return resolve_key(self.audit_key, Path(self.home), deployment() == "production")

    @property
    def landing(self) -> Path:
        return Path(self.home) / "landing"
