"""`convstore keys`: make an API key, or hash one, for the keys file (README, Security).

The keys file can then hold only the sha256, so the key itself lives with the client.
"""

import argparse
import re
import secrets
import sys
from typing import Any

from api.keys import NAME_PATTERN, TENANT_PATTERN, hash_key


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="make an API key, or hash one, for the keys file")
    keys = p.add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="a fresh random key and its keys-file entry (TOML)")
    new.add_argument("--tenant", required=True, help="the tenant (project) the key acts for")
    new.add_argument("--role", choices=("user", "admin"), default="user")
    new.add_argument("--name", help="non-secret id recorded in events (default: hash prefix)")
    hashed = keys.add_parser("hash", help="print the sha256 of a key (read from stdin if absent)")
    hashed.add_argument("key", nargs="?", help="the key; omit it to keep it out of shell history")


def run(args: argparse.Namespace) -> int:
    if args.keys_command == "hash":
        key = args.key if args.key is not None else sys.stdin.readline().strip()
        if not key:
            print("convstore keys hash: no key given", file=sys.stderr)
            return 2
        print(hash_key(key))
        return 0
    if not re.match(TENANT_PATTERN, args.tenant):
        print(f"convstore keys new: tenant must match {TENANT_PATTERN}", file=sys.stderr)
        return 2
    if args.name is not None and not re.match(NAME_PATTERN, args.name):
        print(f"convstore keys new: name must match {NAME_PATTERN}", file=sys.stderr)
        return 2
    key = f"sk-cs-{secrets.token_urlsafe(32)}"
    print(f"# the key (give it to the client; it is not stored anywhere): {key}")
    print("[[keys]]")
    if args.name:
        print(f'name = "{args.name}"')
    print(f'tenant = "{args.tenant}"')
    print(f'role = "{args.role}"')
    print(f'sha256 = "{hash_key(key)}"')
    return 0
