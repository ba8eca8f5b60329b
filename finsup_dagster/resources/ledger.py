"""The ledger as a Dagster resource: one URL, from ``FINSUP_LEDGER_URL``."""

from functools import cached_property
from pathlib import Path

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db


class LedgerResource(dg.ConfigurableResource):
    """Connection to the books (SQLite file or PostgreSQL) and finsup's home folder."""

    url: str = Field(description="SQLAlchemy URL of the ledger (FINSUP_LEDGER_URL)")
    home: str = Field(description="FINSUP_HOME: the landing zone and local state live here")

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.url)

    @property
    def landing(self) -> Path:
        return Path(self.home) / "landing"
