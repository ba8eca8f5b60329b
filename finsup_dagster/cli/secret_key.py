"""`finsup rotate-secret-key`: the approvers' TOTP secrets from the current key to a new one.

Both keys come from the environment, never from the command line (where
they would show in the process list): the current one from
``FINSUP_SECRET_KEY``, the new one from ``FINSUP_NEW_SECRET_KEY``; either may
sit in the ``FINSUP_SECRETS_FILE`` instead. Nothing secret is printed.
"""

from __future__ import annotations

import os

from finsup_dagster.cli.common import JsonFlag, actor, app, emit_json, engine, fail, out

OLD_ENV = "FINSUP_SECRET_KEY"
NEW_ENV = "FINSUP_NEW_SECRET_KEY"


@app.command("rotate-secret-key")
def rotate_secret_key(as_json: JsonFlag = False) -> None:
    """Re-encrypt every approver's TOTP secret from FINSUP_SECRET_KEY to FINSUP_NEW_SECRET_KEY,
    in one transaction (all or nothing); then make the new key FINSUP_SECRET_KEY everywhere."""
    from finsup_dagster.ledger.key_rotation import rotate_secret_key as rotate
    from finsup_dagster.ledger.secret_box import SecretBox

    old, new = os.environ.get(OLD_ENV, ""), os.environ.get(NEW_ENV, "")
    if not old:
        fail(f"{OLD_ENV} is not set: export the key the approvers' secrets are under now")
    if not new:
        fail(f"{NEW_ENV} is not set: create one with `finsup generate-secret-key` and export it")
    count = rotate(engine(), SecretBox(old), SecretBox(new), actor())
    if as_json:
        emit_json({"approvers_reencrypted": count})
        return
    out.print(
        f"{count} approver secret(s) re-encrypted under {NEW_ENV}; set {OLD_ENV} to it "
        "everywhere (finsup serve, the CLI, Dagster) and restart finsup serve"
    )
