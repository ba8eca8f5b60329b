"""The payout gateway resources: environment in, a working PayoutGateway out (over loopback)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from finsup_dagster import settings
from finsup_dagster.gateways.payoneer import PayoneerPayouts
from finsup_dagster.gateways.paypal_payouts import PayPalPayouts
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.resources.gateways import (
    PayoneerResource,
    PayPalPayoutsResource,
    gateway_resources_from_env,
    payout_gateway,
)
from tests.helpers.payout_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAYONEER_ID,
    PAYONEER_SECRET,
    PROGRAM,
    payout_sandbox,
    request_for,
)


def test_local_defaults_point_payouts_at_the_sandbox(tmp_path: Path) -> None:
    defaults = settings.local_defaults(tmp_path)
    assert defaults["FINSUP_PAYPAL_PAYOUTS_BASE_URL"] == settings.SANDBOX_URL
    assert defaults["FINSUP_PAYONEER_BASE_URL"] == settings.SANDBOX_URL
    assert defaults["FINSUP_PAYONEER_PROGRAM_ID"] == settings.SANDBOX_PAYONEER_PROGRAM_ID
    assert defaults["FINSUP_PAYONEER_CLIENT_SECRET"] == settings.SANDBOX_CLIENT_SECRET


def test_resources_from_env_give_gateways_that_pay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with payout_sandbox(tmp_path) as sb:
        env = {
            "FINSUP_PAYPAL_PAYOUTS_BASE_URL": sb.base_url,
            "FINSUP_PAYPAL_CLIENT_ID": CLIENT_ID,
            "FINSUP_PAYPAL_CLIENT_SECRET": CLIENT_SECRET,
            "FINSUP_PAYONEER_BASE_URL": sb.base_url,
            "FINSUP_PAYONEER_AUTH_URL": "",
            "FINSUP_PAYONEER_CLIENT_ID": PAYONEER_ID,
            "FINSUP_PAYONEER_CLIENT_SECRET": PAYONEER_SECRET,
            "FINSUP_PAYONEER_PROGRAM_ID": PROGRAM,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with dg.build_resources(gateway_resources_from_env()) as resources:
            paypal = payout_gateway("paypal", paypal=resources.paypal_payouts)
            payoneer = payout_gateway("payoneer", payoneer=resources.payoneer)
            assert isinstance(paypal, PayPalPayouts) and isinstance(payoneer, PayoneerPayouts)
            assert paypal.submit_batch(request_for("RES-1", ["a@example.com"])).status == "PENDING"
            assert payoneer.submit_batch(request_for("RES-2", ["P-1"])).status == "PENDING"
            assert CLIENT_SECRET not in repr(resources.paypal_payouts.gateway())


def test_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="FINSUP_PAYPAL_PAYOUTS_BASE_URL is empty"):
        PayPalPayoutsResource().gateway()
    with pytest.raises(LedgerError, match="FINSUP_PAYONEER_PROGRAM_ID"):
        PayoneerResource(base_url="http://127.0.0.1:9").gateway()
    with pytest.raises(LedgerError, match="'bank'"):
        payout_gateway("bank", paypal=PayPalPayoutsResource(base_url="http://127.0.0.1:9"))
