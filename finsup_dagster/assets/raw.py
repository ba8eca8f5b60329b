"""Landed files become raw warehouse tables, one asset per landing format and day."""

import warnings
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb as duck
from dagster_duckdb import DuckDBResource
from dagster_pandera import pandera_schema_to_dagster_type

from finsup_dagster import landing, queues
from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.partitions import daily
from finsup_dagster.gateways.paypal_reporting import GatewayError, fetch_transaction_pages
from finsup_dagster.quality import expectations, schemas
from finsup_dagster.resources import LedgerResource, PayPalReportingResource
from finsup_dagster.warehouse import raw
from finsup_dagster.warehouse.raw import LandingReport

OWNERS = ["team:finance-engineering"]
WAREHOUSE_POOL = "warehouse"  # one writer at a time: DuckDB locks the file per process

DESCRIPTIONS = {
    "revenue": "Revenue files (CSV/JSONL, the `finsup ingest-revenue` format)",
    "paypal-transactions": "PayPal Transaction Search API pages (GET /v1/reporting/transactions)",
    "paypal-stl": "PayPal settlement reports (STL), body rows, footers checked",
    "camt053": "Bank statements in ISO 20022 camt.053 XML, one row per entry or batch item",
    "settlement-csv": "Generic settlement CSV (docs/reconciliation.md)",
}


def column_schema(fmt: str) -> dict[str, dg.MetadataValue]:
    """The raw table's columns in the UI, from the pandera model that guards it."""
    model = schemas.SettlementLines if fmt in landing.SETTLEMENT_FORMATS else schemas.RawRevenueRows
    with warnings.catch_warnings():  # dagster-pandera is marked beta
        warnings.simplefilter("ignore")
        schema = pandera_schema_to_dagster_type(model).metadata["schema"]
    return {"dagster/column_schema": schema}


def raw_key(fmt: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", "raw", raw.TABLES[fmt]])


def _check_specs(fmt: str) -> list[dg.AssetCheckSpec]:
    key = raw_key(fmt)
    specs = [
        dg.AssetCheckSpec(
            "files_parsed",
            asset=key,
            description="Every file of the day was read; refused files wait in quarantine.",
        ),
    ]
    if fmt == "paypal-stl":
        specs.append(
            dg.AssetCheckSpec(
                "settlement_footer_totals",
                asset=key,
                description="Every STL file's footer counts and totals agree with its body rows.",
            )
        )
    if fmt in landing.SETTLEMENT_FORMATS:
        specs.append(
            dg.AssetCheckSpec(
                "settlement_expectations",
                asset=key,
                description="Great Expectations report on the day's landed settlement inputs: "
                "footer counts, day coverage, currency mix, amount range.",
            )
        )
    if fmt == "paypal-transactions":
        specs.append(
            dg.AssetCheckSpec(
                "paypal_api_fetched",
                asset=key,
                description="The day's transactions were read from the PayPal reporting API.",
            )
        )
    return specs


def build_raw_asset(fmt: str) -> dg.AssetsDefinition:
    table = raw.TABLES[fmt]

    @dg.multi_asset(
        name=f"raw_{table}",
        specs=[
            dg.AssetSpec(
                raw_key(fmt),
                group_name="ingestion",
                code_version="2",
                kinds={"duckdb", "python"},
                owners=OWNERS,
                metadata=column_schema(fmt),
                description=(
                    f"{DESCRIPTIONS[fmt]}, landed from FINSUP_HOME/landing/{fmt}/<day>/ into "
                    f"raw.{table} with file name, row number and content hash on every row. "
                    "A file already landed (same SHA-256) is skipped; a file that cannot be "
                    "read goes to FINSUP_HOME/quarantine with a reason file."
                ),
            )
        ],
        check_specs=_check_specs(fmt),
        partitions_def=daily,
        pool=WAREHOUSE_POOL,
        op_tags=queues.WAREHOUSE_TAGS,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        ledger: LedgerResource,
        duckdb: DuckDBResource,
        paypal: PayPalReportingResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = context.partition_key
        home = Path(ledger.home)
        fetch_error = None
        fetched = 0
        if fmt == "paypal-transactions" and paypal.enabled:
            try:
                fetched = _fetch_paypal(paypal, home, day)
            except GatewayError as exc:
                fetch_error = str(exc)
                context.log.error(fetch_error)
        with duckdb.get_connection() as conn:
            report = raw.land_partition(conn, home, fmt, day)
            inputs = (
                expectations.landed_inputs(conn, home, fmt, day)
                if fmt in landing.SETTLEMENT_FORMATS
                else None
            )
            totals = _day_totals(conn, fmt, day)
        for q in report.quarantined:
            context.log.error(f"quarantined, kept in {q.path.parent}: {q.describe()}")
        yield dg.MaterializeResult(
            asset_key=raw_key(fmt), metadata=_metadata(report, totals, fetched)
        )
        yield from _checks(fmt, home, day, inputs, fetch_error, paypal.enabled)

    return _asset


def _fetch_paypal(paypal: PayPalReportingResource, home: Path, day: str) -> int:
    """Saves the day's API pages as received; landing then treats them like any file."""
    tz = ZoneInfo(daily.timezone or "UTC")
    start = datetime.combine(date.fromisoformat(day), time(), tz)
    folder = landing.partition_dir(home / "landing", "paypal-transactions", day)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = landing.file_stamp()
    saved = 0
    for label, body in fetch_transaction_pages(
        paypal.credentials(), start, start + timedelta(days=1)
    ):
        part = folder / f".{label}_{stamp}.json.part"
        part.write_bytes(body)
        part.replace(folder / f"{label}_fetched-{stamp}.json")  # never a half-written input
        saved += 1
    return saved


def _day_totals(conn: duck.DuckDBPyConnection, fmt: str, day: str) -> dict[str, int]:
    if fmt in landing.SETTLEMENT_FORMATS:
        sql = (
            "SELECT currency, sum(CASE WHEN direction = 'credit' THEN gross_minor"
            f" ELSE -gross_minor END) FROM raw.{raw.TABLES[fmt]} WHERE partition_date = ?"
            " GROUP BY currency"
        )
    else:
        sql = (
            f"SELECT currency, count(*) FROM raw.{raw.TABLES[fmt]} WHERE partition_date = ?"
            " GROUP BY currency"
        )
    rows = conn.execute(sql, [day]).fetchall()
    return {str(c): int(v) for c, v in rows if c is not None}


_NOTES_SHOWN = 50


def _metadata(
    report: LandingReport, totals: dict[str, int], fetched: int
) -> dict[str, dg.MetadataValue]:
    files = (
        [
            {
                "file": f.file_name,
                "outcome": "landed",
                "rows": f.rows,
                "skipped": f.skipped,
                "note": "; ".join(f.notes)[:120],
            }
            for f in report.landed
        ]
        + [
            {
                "file": name,
                "outcome": "already landed",
                "rows": 0,
                "skipped": 0,
                "note": f"as {first}",
            }
            for name, first in report.already_landed
        ]
        + [
            {
                "file": q.path.name,
                "outcome": "quarantined",
                "rows": 0,
                "skipped": 0,
                "note": q.reason,
            }
            for q in report.quarantined
        ]
    )
    settlement = report.fmt in landing.SETTLEMENT_FORMATS
    # Every note in full (a repeated id or reference, charges shared over a batch,
    # records skipped): each names its file and row, so a person can find it.
    notes = [note for f in report.landed for note in f.notes]
    shown = "\n".join(f"- {note}" for note in notes[:_NOTES_SHOWN])
    if len(notes) > _NOTES_SHOWN:
        shown += f"\n- ... and {len(notes) - _NOTES_SHOWN} more"
    metadata: dict[str, dg.MetadataValue] = {
        "notes_count": dg.MetadataValue.int(len(notes)),
        "notes": dg.MetadataValue.md(shown or "none"),
        "files_landed": dg.MetadataValue.int(len(report.landed)),
        "files_already_landed": dg.MetadataValue.int(len(report.already_landed)),
        "files_quarantined": dg.MetadataValue.int(len(report.quarantined)),
        "rows_landed": dg.MetadataValue.int(report.rows),
        "files": dg.MetadataValue.md(
            markdown_table(files, ["file", "outcome", "rows", "skipped", "note"])
        ),
    }
    if settlement:
        metadata.update(money_by_currency("day_net_settled", totals))
    else:
        metadata.update({f"day_rows_{c}": dg.MetadataValue.int(n) for c, n in totals.items()})
    if report.fmt == "paypal-transactions":
        metadata["api_pages_fetched"] = dg.MetadataValue.int(fetched)
    return metadata


def _named(held: list[landing.Quarantined], shown: int = 3) -> str:
    """The first few refused files with their reasons, each file named once."""
    text = "; ".join(q.describe() for q in held[:shown])
    return text if len(held) <= shown else f"{text}; and {len(held) - shown} more"


def _checks(
    fmt: str,
    home: Path,
    day: str,
    inputs: expectations.LandedInputs | None,
    fetch_error: str | None,
    api_enabled: bool,
) -> list[dg.AssetCheckResult]:
    key = raw_key(fmt)
    held = landing.quarantined(home, fmt, day)
    held_rows = [{"file": q.path.name, "error": q.error, "reason": q.reason} for q in held]
    results = [
        dg.AssetCheckResult(
            asset_key=key,
            check_name="files_parsed",
            passed=not held,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "every file read"
                if not held
                else f"{len(held)} file(s) in quarantine: {_named(held)}"
            ),
            metadata={
                "quarantined": dg.MetadataValue.int(len(held)),
                "quarantine_folder": dg.MetadataValue.path(
                    str(landing.quarantine_dir(home, fmt, day))
                ),
                "files": dg.MetadataValue.md(
                    markdown_table(held_rows, ["file", "error", "reason"])
                ),
            },
        )
    ]
    if fmt == "paypal-stl":
        bad = [q for q in held if q.is_footer_mismatch]
        results.append(
            dg.AssetCheckResult(
                asset_key=key,
                check_name="settlement_footer_totals",
                passed=not bad,
                severity=dg.AssetCheckSeverity.ERROR,
                description="footers agree" if not bad else _named(bad),
                metadata={"files_refused": dg.MetadataValue.int(len(bad))},
            )
        )
    if inputs is not None:
        results.append(_expectations(key, inputs))
    if fmt == "paypal-transactions":
        results.append(
            dg.AssetCheckResult(
                asset_key=key,
                check_name="paypal_api_fetched",
                passed=fetch_error is None,
                severity=dg.AssetCheckSeverity.ERROR,
                description=fetch_error
                or ("fetched" if api_enabled else "FINSUP_PAYPAL_BASE_URL is empty: API not read"),
            )
        )
    return results


def _expectations(key: dg.AssetKey, inputs: expectations.LandedInputs) -> dg.AssetCheckResult:
    # Great Expectations takes seconds to import: only runs that land settlements pay for it.
    if inputs.nothing_landed:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name="settlement_expectations",
            passed=True,
            description="no settlement file of this format has landed yet",
        )
    report = expectations.check_landed_inputs(inputs)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="settlement_expectations",
        passed=report.success,
        # A footer count that disagrees is an error; coverage and distributions are warnings.
        severity=dg.AssetCheckSeverity.ERROR if report.serious else dg.AssetCheckSeverity.WARN,
        description="all expectations met" if report.success else report.failed[0],
        metadata={
            "expectations_evaluated": dg.MetadataValue.int(report.evaluated),
            "failed": dg.MetadataValue.md("\n".join(f"- {f}" for f in report.failed) or "none"),
        },
    )


raw_assets = [build_raw_asset(fmt) for fmt in landing.FORMATS]
