"""PII removal: datatrove's PIIFormatter (e-mails, public IPv4) plus what it lacks (phone numbers, Luhn-checked
credit-card numbers, national ID numbers, IPv6), each replaced by a placeholder such as `<EMAIL>`."""

from __future__ import annotations

import ipaddress
import re
from functools import partial

from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer, public_ip_validator

from llm_recipes.errors import ConfigError

PLACEHOLDERS = {
    "email": "<EMAIL>", "ip": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>", "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>", "national_id": "<NATIONAL_ID>",
}
PII_TYPES = tuple(PLACEHOLDERS)


def luhn_valid(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ipv6_valid(candidate: str, public_only: bool = True) -> bool:
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return address.is_global or not public_only


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def national_id_valid(candidate: str) -> bool:
    """US SSN (no 000/666/9xx area, 00 group, 0000 serial), UK NINO (valid prefix), Spanish DNI (check letter)."""
    text = candidate.upper()
    ssn = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", text)
    if ssn:
        area, group, serial = ssn.groups()
        return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"
    nino = re.fullmatch(r"([A-Z]{2}) ?\d{2} ?\d{2} ?\d{2} ?[A-D]", text)
    if nino:
        prefix = nino.group(1)
        return (prefix[0] not in "DFIQUV" and prefix[1] not in "DFIOQUV"
                and prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"))
    dni = re.fullmatch(r"(\d{8})-?([A-Z])", text)
    if dni:
        return DNI_LETTERS[int(dni.group(1)) % 23] == dni.group(2)
    return False


# Phone numbers: international (+CC ...) or national formats with separators; bare digit runs (years, counts,
# ids) are not phone numbers.
PHONE = (r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
         r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}|0\d{2,4} \d{3,4} ?\d{3,4})(?![\w-])")
CREDIT_CARD = r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"
NATIONAL_ID = (r"(?<![\w-])(?:\d{3}-\d{2}-\d{4}|[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]|\d{8}-?[A-Za-z])(?![\w-])")
IPV6 = r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"


def _valid_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    return 9 <= digits <= 15


class PIIScrubber(BaseFormatter):
    """Replaces the configured PII `types` with placeholders; datatrove's PIIFormatter does e-mails and IPv4."""

    name = "🕵️ PII"

    def __init__(self, types: list[str] | tuple[str, ...] = PII_TYPES, placeholders: dict | None = None,
                 only_public_ips: bool = True):
        super().__init__()
        unknown = sorted(set(types) - set(PII_TYPES))
        if unknown:
            raise ConfigError(f"pii.types: unknown type '{unknown[0]}' (known: {', '.join(PII_TYPES)})")
        self.types = tuple(types)
        self.placeholders = {**PLACEHOLDERS, **(placeholders or {})}
        self.datatrove_pii = PIIFormatter(
            remove_emails="email" in self.types, remove_ips="ip" in self.types, only_remove_public_ips=only_public_ips,
            email_replacement=self.placeholders["email"], ip_replacement=self.placeholders["ip"],
        )
        # order matters: cards (longest digit runs) before national IDs and phones
        self.replacers = [
            PIIReplacer(regex, self.placeholders[kind], validator)
            for kind, regex, validator in (
                ("ipv6", IPV6, partial(ipv6_valid, public_only=only_public_ips)),
                ("credit_card", CREDIT_CARD, luhn_valid),
                ("national_id", NATIONAL_ID, national_id_valid),
                ("phone", PHONE, _valid_phone),
            )
            if kind in self.types
        ]

    def format(self, text: str) -> str:
        text = self.datatrove_pii.format(text)
        for replacer in self.replacers:
            text = replacer.replace(text)
        return text


def count_placeholders(text: str, placeholders: dict | None = None) -> dict[str, int]:
    """How many placeholders of each kind a text holds (IPv4 and IPv6 share one)."""
    counts: dict[str, int] = {}
    for kind, placeholder in {**PLACEHOLDERS, **(placeholders or {})}.items():
        if kind != "ipv6":
            n = text.count(placeholder)
            if n:
                counts[kind if kind != "ip" else "ip_address"] = n
    return counts


__all__ = ["PIIScrubber", "luhn_valid", "national_id_valid", "ipv6_valid", "public_ip_validator", "PII_TYPES"]
