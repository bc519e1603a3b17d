"""Would the backing Postgres let a relayed client in without a password?

SieveDB relays each client's startup to Postgres over its own connection, so Postgres applies the
pg_hba.conf rules of *that* connection: ``local`` lines when the relay uses the unix socket,
``host``/``hostnossl`` lines matching the relay's address on TCP (the relay never uses TLS or
GSSAPI to Postgres). A rule that authenticates by the connection alone (trust; peer and ident,
which name the relay's own operating-system user) then admits anyone who reaches SieveDB.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

PASSWORDLESS = frozenset({"trust", "peer", "ident"})


@dataclass(frozen=True)
class Rule:
    """One row of pg_hba_file_rules."""

    line_number: int
    type: str
    database: tuple[str, ...]
    user_name: tuple[str, ...]
    address: str | None
    netmask: str | None
    auth_method: str

    def describe(self) -> str:
        where = f" {self.address}" + (f"/{self.netmask}" if self.netmask else "") if self.address else ""
        return (
            f"pg_hba.conf line {self.line_number}: {self.type} {','.join(self.database)} "
            f"{','.join(self.user_name)}{where} {self.auth_method}"
        )


def passwordless_rule(rules: list[Rule], unix_socket: bool, relay_address: str | None) -> Rule | None:
    """The first rule that would admit some relayed connection without a password, or None.

    ``relay_address`` is the address Postgres sees the relay connect from (None: unknown, any
    address rule may match). Conservative where the file is: a host name, samehost or samenet
    may match; only an ``all all`` rule shadows the rules after it (and not for replication
    connections, which ``all`` does not match)."""
    types = {"local"} if unix_socket else {"host", "hostnossl"}
    shadowed = False
    for rule in rules:
        if rule.type not in types or not (unix_socket or _address_matches(rule, relay_address)):
            continue
        if shadowed and "replication" not in rule.database:
            continue
        if rule.auth_method in PASSWORDLESS:
            return rule
        if rule.database == ("all",) and rule.user_name == ("all",):
            shadowed = True
    return None


def _address_matches(rule: Rule, relay_address: str | None) -> bool:
    if relay_address is None or rule.address in (None, "all", "samehost", "samenet"):
        return True
    try:
        if rule.netmask:
            network = ipaddress.ip_network(f"{rule.address}/{rule.netmask}", strict=False)
        else:
            network = ipaddress.ip_network(rule.address, strict=False)
        address = ipaddress.ip_address(relay_address)
    except ValueError:
        return True  # a host name: it may resolve to the relay
    if address.version != network.version:
        return False
    return address in network


RULES_QUERY = """
    SELECT line_number, type, database, user_name, address, netmask, auth_method
    FROM pg_hba_file_rules WHERE error IS NULL ORDER BY rule_number
"""


def rules_from_rows(rows: list) -> list[Rule]:
    return [
        Rule(
            line_number=row["line_number"],
            type=row["type"],
            database=tuple(row["database"] or ()),
            user_name=tuple(row["user_name"] or ()),
            address=row["address"],
            netmask=row["netmask"],
            auth_method=row["auth_method"],
        )
        for row in rows
    ]
