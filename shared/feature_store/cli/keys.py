"""fs-keys: the API clients of the feature store and their keys (docs/security.md).

    fs-keys clients create CLIENT --groups G --feature-sets S [--name N] [--google-principal P]
                                  [--batch-max N] [--rate R] [--burst B]
    fs-keys clients list
    fs-keys clients update CLIENT [--groups G] [--feature-sets S] [--google-principal P] [--batch-max N] ...
    fs-keys clients disable CLIENT
    fs-keys keys create CLIENT [--expires-in-days D]     prints the key ONCE; only its hash is stored
    fs-keys keys list [--client CLIENT]                   never shows a secret
    fs-keys keys rotate KEY_ID [--grace-hours H]          a new key; the old one expires after H hours (24)
    fs-keys keys revoke KEY_ID                            refused from now on (within FS_AUTH_CACHE_S everywhere)

--groups and --feature-sets take ``all`` or a comma-separated list: catalog groups (demographics,
velocity, behavior, repayment, risk) and feature sets as ``name`` (every version) or ``name:version``.
A client's burst must hold its largest batch (burst >= batch-max). Output is JSON, one object per line.
Exit codes (cli/runner.py): 0 done, 2 bad input, 3 refused (unknown client or key, taken principal),
4 PostgreSQL unavailable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from feature_store.cli.runner import run_cli
from feature_store.domain.api_keys import hash_secret, new_key
from feature_store.domain.catalog import CATALOG
from feature_store.errors import InvalidParameter
from feature_store.settings import Settings
from feature_store.stores.api_clients import ApiClientStore, ClientFields, check_limits
from feature_store.stores.postgres import PostgresPool

_CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
GROUPS = frozenset(f.group for fs in CATALOG.values() for f in fs.features)
DEFAULT_BATCH_MAX, DEFAULT_RATE, DEFAULT_BURST = 100, 100.0, 200
DEFAULT_GRACE_HOURS = 24


def _client_id(text: str) -> str:
    if not _CLIENT_ID.match(text):
        raise InvalidParameter(f"client id {text[:80]!r}: use 1-64 lowercase letters, digits, '_', '.', '-'",
                               code="invalid_client_id")
    return text


def parse_groups(text: str | None) -> tuple[frozenset[str] | None, bool]:
    """(groups, all): ``all`` or a list of catalog groups."""
    if text is None:
        return None, False
    if text.strip() == "all":
        return None, True
    groups = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(groups - GROUPS)
    if unknown or not groups:
        raise InvalidParameter(f"unknown feature groups {', '.join(unknown) or '(none given)'}; "
                               f"groups: {', '.join(sorted(GROUPS))}", code="unknown_feature_group")
    return groups, False


def parse_feature_sets(text: str | None) -> tuple[frozenset[str] | None, bool]:
    """(feature sets, all): ``all`` or ``name`` / ``name:version`` entries that the catalog has."""
    if text is None:
        return None, False
    if text.strip() == "all":
        return None, True
    entries = frozenset(p.strip() for p in text.split(",") if p.strip())
    known = {name for name, _ in CATALOG} | {f"{name}:{v}" for name, v in CATALOG}
    unknown = sorted(entries - known)
    if unknown or not entries:
        raise InvalidParameter(f"unknown feature sets {', '.join(unknown) or '(none given)'}; "
                               f"known: {', '.join(sorted(known))}", code="unknown_feature_set")
    return entries, False


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value

    return parse


def _emit(item: dict[str, Any]) -> None:
    print(json.dumps(item, sort_keys=True))


def _scope_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--groups", required=required, help="'all' or comma-separated feature groups")
    parser.add_argument("--feature-sets", required=required, help="'all' or name / name:version, comma-separated")
    parser.add_argument("--name", help="display name")
    parser.add_argument("--google-principal", help="the email (or subject) of a Google identity acting as this client")
    parser.add_argument("--batch-max", type=_positive(int), help=f"users per batch (default {DEFAULT_BATCH_MAX})")
    parser.add_argument("--rate", type=_positive(float), help=f"users per second (default {DEFAULT_RATE:g})")
    parser.add_argument("--burst", type=_positive(int), help=f"users at once, >= batch-max (default {DEFAULT_BURST})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fs-keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    clients = kinds.add_parser("clients").add_subparsers(dest="action", required=True)
    _scope_options(create := clients.add_parser("create"), required=True)
    create.add_argument("client")
    clients.add_parser("list")
    _scope_options(update := clients.add_parser("update"), required=False)
    update.add_argument("client")
    clients.add_parser("disable").add_argument("client")
    keys = kinds.add_parser("keys").add_subparsers(dest="action", required=True)
    make = keys.add_parser("create")
    make.add_argument("client")
    make.add_argument("--expires-in-days", type=_positive(float), help="the key stops working then (default: never)")
    keys.add_parser("list").add_argument("--client")
    rotate = keys.add_parser("rotate")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-hours", type=float, default=DEFAULT_GRACE_HOURS,
                        help=f"how long the old key keeps working (default {DEFAULT_GRACE_HOURS})")
    keys.add_parser("revoke").add_argument("key_id")
    return parser


def run(args: argparse.Namespace, store: ApiClientStore, pepper: bytes | None) -> None:
    """One command against the store (``pepper``: only commands that make keys need it)."""
    if args.kind == "clients":
        _clients(args, store)
        return
    if args.action == "create":
        client = store.client(_client_id(args.client))
        key_id, secret, key = new_key()
        expires = (None if args.expires_in_days is None
                   else datetime.now(UTC) + timedelta(days=args.expires_in_days))
        record = store.add_key(key_id, client.client_id, hash_secret(_need(pepper), secret), expires)
        _emit({**record.to_dict(), "key": key, "note": "the key is shown once: store it now"})
    elif args.action == "list":
        for record in store.keys(None if args.client is None else _client_id(args.client)):
            _emit(record.to_dict())
    elif args.action == "rotate":
        if args.grace_hours < 0:
            raise InvalidParameter("--grace-hours must be 0 or more", code="invalid_grace")
        key_id, secret, key = new_key()
        old, new = store.rotate(args.key_id, key_id, hash_secret(_need(pepper), secret),
                                round(args.grace_hours * 3600))
        _emit({"old": old.to_dict(), "new": {**new.to_dict(), "key": key},
               "note": "the new key is shown once: store it now"})
    else:
        _emit(store.revoke(args.key_id).to_dict())


def _clients(args: argparse.Namespace, store: ApiClientStore) -> None:
    if args.action == "list":
        for client in store.clients():
            _emit(client.to_dict())
        return
    client_id = _client_id(args.client)
    if args.action == "disable":
        _emit(store.disable_client(client_id).to_dict())
        return
    groups, all_groups = parse_groups(args.groups)
    sets, all_sets = parse_feature_sets(args.feature_sets)
    fields = ClientFields(display_name=args.name, google_principal=args.google_principal, groups=groups,
                          feature_sets=sets, batch_max=args.batch_max, rate_per_s=args.rate, burst=args.burst)
    if args.action == "create":
        batch_max = args.batch_max or DEFAULT_BATCH_MAX
        burst = args.burst or max(DEFAULT_BURST, batch_max)
        check_limits(batch_max, burst)
        fields = ClientFields(display_name=args.name, google_principal=args.google_principal, groups=groups,
                              feature_sets=sets, batch_max=batch_max, rate_per_s=args.rate or DEFAULT_RATE,
                              burst=burst)
        _emit(store.create_client(client_id, fields).to_dict())
    else:
        _emit(store.update_client(client_id, fields, all_groups=all_groups, all_feature_sets=all_sets).to_dict())


def _need(pepper: bytes | None) -> bytes:
    assert pepper is not None
    return pepper


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings = Settings.from_env()
        makes_keys = args.kind == "keys" and args.action in ("create", "rotate")
        pepper = settings.key_pepper() if makes_keys else None
        pool = PostgresPool(settings.postgres)
        try:
            run(args, ApiClientStore(pool), pepper)
        finally:
            pool.close()
        return 0

    return run_cli("fs-keys", body)


if __name__ == "__main__":
    sys.exit(main())
