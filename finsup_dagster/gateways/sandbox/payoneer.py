"""Payoneer's mass payout API (v4) in the sandbox, with its client-credentials token.

- ``POST /api/v2/oauth2/token`` (Payoneer's login service; Basic auth,
  ``grant_type=client_credentials``, ``scope=read write``) -> bearer token.
- ``POST /v4/programs/{program_id}/masspayouts`` with ``{"Payments": [{
  client_reference_id, payee_id, amount, currency, description}]}``. A
  ``client_reference_id`` already used is refused and nothing in that
  request is created (400, ``error_details.code`` 10302).
- ``GET /v4/programs/{program_id}/payouts/{client_reference_id}/status``.
- ``POST /v4/programs/{program_id}/payouts/{client_reference_id}/cancel``:
  only while the payment is Pending or waiting for the payee.

Payoneer has no batch id: each payment is known by the caller's reference.
Amounts are JSON numbers; they are read and written digit for digit
(Decimal), and must not carry more decimals than the currency has.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.gateways.exact_json import dumps_exact, loads_exact
from finsup_dagster.gateways.sandbox.outcomes import PAYONEER_STATUS, Outcome, payoneer_tag
from finsup_dagster.gateways.sandbox.paypal_common import (
    TokenRefusals,
    bearer_refusal,
    lookup_route,
    token_form,
)
from finsup_dagster.gateways.sandbox.state import PayoneerPayment, SandboxState
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.money import format_minor, to_minor

PAYONEER_MAX_PAYMENTS = 500
DUPLICATE_REFERENCE_CODE = 10302
PAYMENT_NOT_FOUND_CODE = 10301


class ExactJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps_exact(content).encode("utf-8")


PAYONEER_REFUSALS = TokenRefusals(
    ExactJSONResponse, "Client authentication failed", lambda grant: f"grant_type {grant!r}"
)


def _error(status: int, error: str, description: str, code: int) -> Response:
    return ExactJSONResponse(
        {
            "error": error,
            "error_description": description,
            "error_details": {"code": code, "description": description},
        },
        status_code=status,
    )


def payoneer_routes(state: SandboxState) -> list[BaseRoute]:
    async def token(request: Request) -> Response:
        form = await token_form(
            request, state.payoneer_client_id, state.payoneer_client_secret, PAYONEER_REFUSALS
        )
        if isinstance(form, Response):
            return form
        return ExactJSONResponse(
            {
                "token_type": "Bearer",
                "access_token": state.issue_token("payoneer"),
                "expires_in": state.token_ttl_seconds,
                "consented_on": int(time.time()),
                "scope": form.get("scope", ["read write"])[0],
                "refresh_token": None,
                "refresh_token_expires_in": 0,
                "id_token": None,
                "error": None,
                "error_description": None,
            }
        )

    def guard(request: Request) -> Response | None:
        refusal = bearer_refusal(request, state, "payoneer")
        if refusal is not None:
            return refusal
        if request.path_params["program_id"] != state.payoneer_program_id:
            return _error(404, "Program not found", "Unknown program id", 10000)
        return None

    async def mass_payout(request: Request) -> Response:
        refusal = guard(request)
        if refusal is not None:
            return refusal
        try:
            body = loads_exact(await request.body())
        except ValueError:
            return _error(400, "Invalid request", "Request body is not valid JSON", 10001)
        payments = body.get("Payments") if isinstance(body, dict) else None
        if not isinstance(payments, list) or not payments:
            return _error(400, "Invalid request", "Payments must be a non-empty list", 10001)
        if len(payments) > PAYONEER_MAX_PAYMENTS:
            return _error(
                400,
                "Invalid request",
                f"{len(payments)} payments: at most {PAYONEER_MAX_PAYMENTS} in one request",
                10001,
            )
        parsed = []
        for n, payment in enumerate(payments):
            checked = _check_payment(n, payment)
            if isinstance(checked, Response):
                return checked
            parsed.append(checked)
        refs = [p[0] for p in parsed]
        if len(set(refs)) != len(refs):
            return _error(400, "Invalid request", "client_reference_id repeated in request", 10001)
        now_wall, now = time.time(), time.monotonic()
        with state.lock:
            used = [ref for ref in refs if ref in state.payoneer_payments]
            if used:
                return _error(
                    400,
                    "Duplicate client reference id",
                    f"Payment with client_reference_id {used[0]} already exists",
                    DUPLICATE_REFERENCE_CODE,
                )
            created = []
            for ref, payee, amount, currency, description in parsed:
                payment_state = PayoneerPayment(
                    client_reference_id=ref,
                    payout_id=str(secrets.randbelow(9 * 10**8) + 10**8),
                    payee_id=payee,
                    amount=amount,
                    currency=currency,
                    description=description,
                    created_wall=now_wall,
                    outcome=Outcome(payoneer_tag(payee), now),
                )
                state.payoneer_payments[ref] = payment_state
                created.append({"client_reference_id": ref, "payout_id": payment_state.payout_id})
        return ExactJSONResponse({"result": "Payments Created", "payments": created})

    def status_answer(request: Request, payment: PayoneerPayment) -> Response:
        return ExactJSONResponse({"result": _status_body(payment, state)})

    def cancel_answer(request: Request, payment: PayoneerPayment) -> Response:
        current = _outcome(payment, state)
        if current not in {"pending", "unclaimed"}:
            return _error(
                400,
                "Payment cannot be cancelled",
                f"Payment is {PAYONEER_STATUS[current]}",
                10303,
            )
        payment.outcome.override = "cancelled"
        return ExactJSONResponse({"result": _status_body(payment, state)})

    def find(ref: str) -> PayoneerPayment | None:
        return state.payoneer_payments.get(ref)

    status = lookup_route(state, guard, "ref", find, _not_found, status_answer)
    cancel = lookup_route(state, guard, "ref", find, _not_found, cancel_answer)

    base = "/v4/programs/{program_id}"
    return [
        Route("/api/v2/oauth2/token", token, methods=["POST"]),
        Route(f"{base}/masspayouts", mass_payout, methods=["POST"]),
        Route(f"{base}/payouts/{{ref}}/status", status, methods=["GET"]),
        Route(f"{base}/payouts/{{ref}}/cancel", cancel, methods=["POST"]),
    ]


def _not_found(ref: str) -> Response:
    return _error(
        404,
        "Payment not found",
        f"No payment with client_reference_id {ref}",
        PAYMENT_NOT_FOUND_CODE,
    )


def _check_payment(n: int, payment: Any) -> tuple[str, str, str, str, str] | Response:
    if not isinstance(payment, dict):
        return _error(400, "Invalid request", f"Payments[{n}] must be an object", 10001)
    ref, payee = payment.get("client_reference_id"), payment.get("payee_id")
    amount, currency = payment.get("amount"), payment.get("currency")
    description = payment.get("description", "")
    if not isinstance(ref, str) or not 1 <= len(ref) <= 64:
        return _error(400, "Invalid request", f"Payments[{n}].client_reference_id", 10001)
    if not isinstance(payee, str) or not payee:
        return _error(400, "Invalid request", f"Payments[{n}].payee_id is required", 10001)
    if not isinstance(currency, str) or not isinstance(description, str):
        return _error(400, "Invalid request", f"Payments[{n}].currency is required", 10001)
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        return _error(400, "Invalid request", f"Payments[{n}].amount must be a number", 10001)
    text = format(amount, "f") if isinstance(amount, Decimal) else str(amount)
    try:
        minor = to_minor(text, currency)
    except InvalidInput as exc:
        return _error(400, "Invalid amount", f"Payments[{n}].amount: {exc}", 10002)
    return ref, payee, format_minor(minor, currency), currency, description


def _outcome(payment: PayoneerPayment, state: SandboxState) -> str:
    current = payment.outcome.at(time.monotonic(), state.outcome_delay)
    old, payment.last_seen = payment.last_seen, current
    state.seen(
        "payoneer",
        payment.client_reference_id,
        PAYONEER_STATUS[old],
        PAYONEER_STATUS[current],
    )
    return current


def _status_body(payment: PayoneerPayment, state: SandboxState) -> dict[str, Any]:
    current = _outcome(payment, state)
    return {
        "client_reference_id": payment.client_reference_id,
        "payout_id": payment.payout_id,
        "payee_id": payment.payee_id,
        "payout_date": datetime.fromtimestamp(payment.created_wall, UTC).isoformat(),
        "amount": Decimal(payment.amount),
        "currency": payment.currency,
        "status": PAYONEER_STATUS[current],
        "status_description": PAYONEER_STATUS[current],
    }
