"""Which environment we are in, the embedded defaults, and policies read from the environment.

Dagster definitions read every setting through ``dg.EnvVar``. Local entry
points (the ``finsup`` CLI, ``make demo``, ``make dev``) call
``apply_local_defaults`` first, so an unset variable falls back to the
embedded stack under ``FINSUP_HOME``. With ``FINSUP_DEPLOYMENT=production``
nothing is filled in: every variable must be set.
"""

from __future__ import annotations

import os
from pathlib import Path

from finsup_dagster.ledger.approvals import ApprovalPolicy
from finsup_dagster.ledger.batching import BatchPolicy
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.ledger.money import parse_amount_map
from finsup_dagster.ledger.secret_box import SecretBox

DEPLOYMENTS = ("local", "ci", "production")

# Payout policy defaults: documented in docs/payouts.md.
POLICY_DEFAULTS = {
    "FINSUP_MIN_ITEM": "*=1.00",
    "FINSUP_MAX_BATCH_TOTAL": "*=50000.00",
    "FINSUP_DUAL_APPROVAL_OVER": "*=10000.00",
    "FINSUP_LOCKOUT_ATTEMPTS": "5",
    "FINSUP_LOCKOUT_MINUTES": "15",
}


# Reconciliation defaults: documented in docs/reconciliation.md.
RECONCILIATION_DEFAULTS = {
    "FINSUP_TIMEZONE": "UTC",
    "FINSUP_UNMATCHED_RATE_THRESHOLD": "0.05",
}
# Alerts defaults: documented in docs/alerts.md. Empty channel settings turn a channel off.
ALERT_DEFAULTS = {
    "FINSUP_ALERT_SLACK_WEBHOOK_URL": "",
    "FINSUP_ALERT_PAGERDUTY_ROUTING_KEY": "",
    "FINSUP_ALERT_PAGERDUTY_URL": "https://events.pagerduty.com/v2/enqueue",
    "FINSUP_ALERT_WEBHOOK_URL": "",
    "FINSUP_STUCK_AFTER_HOURS": "48",
    "FINSUP_ALERT_REMIND_HOURS": "24",
}
STUCK_SENSOR_INTERVAL_DEFAULT = 300
# The bundled sandbox's credentials (finsup sandbox serve); never PayPal's.
SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"
# Where `finsup sandbox serve` listens by default, and its one Payoneer program.
SANDBOX_URL = "http://127.0.0.1:8765"
SANDBOX_PAYONEER_PROGRAM_ID = "100000001"
# The sandbox's webhook signing secrets and PayPal webhook id (docs/webhooks.md); never PayPal's.
SANDBOX_WEBHOOK_SECRET_PAYPAL = "sandbox-webhook-secret-paypal"
SANDBOX_WEBHOOK_SECRET_PAYONEER = "sandbox-webhook-secret-payoneer"
SANDBOX_PAYPAL_WEBHOOK_ID = "WHSANDBOX0000000000000001"


def deployment() -> str:
    """``FINSUP_DEPLOYMENT`` if set, else ``ci`` under CI, else ``local``."""
    explicit = os.environ.get("FINSUP_DEPLOYMENT")
    if explicit:
        if explicit not in DEPLOYMENTS:
            raise LedgerError(
                f"FINSUP_DEPLOYMENT={explicit!r} is not one of {', '.join(DEPLOYMENTS)}"
            )
        return explicit
    return "ci" if os.environ.get("CI") else "local"


def local_defaults(home: Path) -> dict[str, str]:
    home = home.absolute()
    return {
        "FINSUP_HOME": str(home),
        "FINSUP_LEDGER_URL": f"sqlite:///{home / 'ledger.db'}",
        "DAGSTER_HOME": str(home / "dagster_home"),
        "FINSUP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        # Empty: the PayPal API is not read unless a sandbox or PayPal is configured.
        "FINSUP_PAYPAL_BASE_URL": "",
        "FINSUP_PAYPAL_CLIENT_ID": SANDBOX_CLIENT_ID,
        "FINSUP_PAYPAL_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        # Payouts go to the local sandbox unless configured: never a real gateway by default.
        "FINSUP_PAYPAL_PAYOUTS_BASE_URL": SANDBOX_URL,
        "FINSUP_PAYONEER_BASE_URL": SANDBOX_URL,
        "FINSUP_PAYONEER_AUTH_URL": "",  # empty: the token is asked of FINSUP_PAYONEER_BASE_URL
        "FINSUP_PAYONEER_CLIENT_ID": SANDBOX_CLIENT_ID,
        "FINSUP_PAYONEER_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "FINSUP_PAYONEER_PROGRAM_ID": SANDBOX_PAYONEER_PROGRAM_ID,
        # Bank payouts: files in the outbox, paid from a demo account (a valid test IBAN).
        "FINSUP_BANK_OUTBOX": str(home / "outbox" / "bank"),
        "FINSUP_BANK_DEBTOR_NAME": "finsup demo",
        "FINSUP_BANK_DEBTOR_IBAN": "GB82WEST12345698765432",
        "FINSUP_BANK_DEBTOR_BIC": "WESTGB2L",
        # Webhooks (finsup serve): the sandbox's signatures, refused when older than 5 minutes.
        "FINSUP_WEBHOOK_SECRET_PAYPAL": SANDBOX_WEBHOOK_SECRET_PAYPAL,
        "FINSUP_WEBHOOK_SECRET_PAYONEER": SANDBOX_WEBHOOK_SECRET_PAYONEER,
        "FINSUP_WEBHOOK_MAX_AGE_SECONDS": "300",
        "FINSUP_WEBHOOK_MAX_BYTES": str(256 * 1024),
        "FINSUP_PAYPAL_WEBHOOK_VERIFY": "hmac",
        "FINSUP_PAYPAL_WEBHOOK_ID": SANDBOX_PAYPAL_WEBHOOK_ID,
        # Empty: checkpoints are signed with a key file under FINSUP_HOME/audit/.
        "FINSUP_AUDIT_KEY": "",
        **POLICY_DEFAULTS,
        **RECONCILIATION_DEFAULTS,
        **ALERT_DEFAULTS,
    }


SECRETS_FILE_VAR = "FINSUP_SECRETS_FILE"


def load_secrets_file() -> list[str]:
    """Fills unset variables from the file ``FINSUP_SECRETS_FILE`` names, if any.

    The file holds ``NAME=value`` lines (blank lines and ``#`` comments
    allowed), e.g. the gateways' client secrets, so they need not sit in the
    environment of every process that starts. It must be readable by its
    owner only (like an SSH key); a variable already set wins. Returns the
    names it set, never a value.
    """
    path_text = os.environ.get(SECRETS_FILE_VAR, "").strip()
    if not path_text:
        return []
    path = Path(path_text)
    try:
        if path.stat().st_mode & 0o077:  # asked before a byte of it is read
            raise LedgerError(f"{SECRETS_FILE_VAR}: {path} is readable by others; chmod 600 it")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"{SECRETS_FILE_VAR}: cannot read {path}: {exc.strerror}") from None
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            # The line may hold a secret: say where it is, never what it says.
            raise LedgerError(f"{SECRETS_FILE_VAR}: {path} line {number} is not NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # NAME="value", as env files often write it
        if name not in os.environ:
            os.environ[name] = value
            names.append(name)
    return names


def apply_local_defaults() -> dict[str, str]:
    """Fills unset variables with the embedded defaults (never in production)."""
    if deployment() == "production":
        return {}
    home = Path(os.environ.get("FINSUP_HOME", ".finsup"))
    applied = {}
    for key, value in local_defaults(home).items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied


def _env(name: str) -> str:
    value = os.environ.get(name, POLICY_DEFAULTS.get(name))
    if value is None:
        raise LedgerError(f"{name} is not set")
    return value


def _amounts(name: str) -> dict[str, str]:
    try:
        return parse_amount_map(_env(name))
    except LedgerError as exc:
        # Name the setting: "'lots' is not CURRENCY=AMOUNT" alone does not say where to look.
        raise LedgerError(f"{name}: {exc}") from None


def batch_policy() -> BatchPolicy:
    return BatchPolicy(
        min_item=_amounts("FINSUP_MIN_ITEM"),
        max_batch_total=_amounts("FINSUP_MAX_BATCH_TOTAL"),
        dual_approval_over=_amounts("FINSUP_DUAL_APPROVAL_OVER"),
    )


def stuck_sensor_interval_seconds() -> int:
    """FINSUP_STUCK_SENSOR_INTERVAL_SECONDS (default 300): read when the definitions load,
    as Dagster fixes a sensor's interval then; a bad value falls back to the default
    rather than stopping the code location from loading."""
    raw = os.environ.get("FINSUP_STUCK_SENSOR_INTERVAL_SECONDS", "")
    try:
        return max(int(raw), 30) if raw.strip() else STUCK_SENSOR_INTERVAL_DEFAULT
    except ValueError:
        return STUCK_SENSOR_INTERVAL_DEFAULT


def parse_hours(raw: str, variable: str) -> float:
    """A number of hours, zero or more, or one line naming the setting."""
    try:
        hours = float(raw)
    except ValueError:
        raise LedgerError(f"{variable} must be a number of hours, got {raw!r:.20}") from None
    if not hours >= 0:  # also refuses NaN
        raise LedgerError(f"{variable} must be zero or more hours, got {raw!r:.20}")
    return hours


def stuck_after_hours() -> float:
    """FINSUP_STUCK_AFTER_HOURS (default 48), the CLI's threshold."""
    name = "FINSUP_STUCK_AFTER_HOURS"
    return parse_hours(os.environ.get(name) or ALERT_DEFAULTS[name], name)


def approval_policy() -> ApprovalPolicy:
    try:
        return ApprovalPolicy(
            lockout_attempts=int(_env("FINSUP_LOCKOUT_ATTEMPTS")),
            lockout_minutes=int(_env("FINSUP_LOCKOUT_MINUTES")),
        )
    except ValueError:
        raise LedgerError(
            "FINSUP_LOCKOUT_ATTEMPTS and FINSUP_LOCKOUT_MINUTES must be whole numbers"
        ) from None


def demo_key_path() -> Path:
    return Path(os.environ.get("FINSUP_HOME", ".finsup")) / "demo-secret.key"


def secret_box() -> SecretBox:
    """From ``FINSUP_SECRET_KEY``; only the demo (``FINSUP_DEMO=1``) may fall back to a local key file."""
    key = os.environ.get("FINSUP_SECRET_KEY")
    if key:
        return SecretBox(key)
    if os.environ.get("FINSUP_DEMO") == "1" and deployment() != "production":
        from finsup_dagster.ledger.secret_box import generate_key

        path = demo_key_path()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generate_key())
            path.chmod(0o600)
        return SecretBox(path.read_text().strip())
    raise LedgerError(
        "FINSUP_SECRET_KEY is not set: create one with `finsup generate-secret-key` and export it"
    )


def audit_key() -> bytes | None:
    """The checkpoint key: ``FINSUP_AUDIT_KEY``; outside production a local key file otherwise."""
    from finsup_dagster.ledger.checkpoints import resolve_key

    home = Path(os.environ.get("FINSUP_HOME", ".finsup"))
    return resolve_key(
        os.environ.get("FINSUP_AUDIT_KEY", ""), home, production=deployment() == "production"
    )
