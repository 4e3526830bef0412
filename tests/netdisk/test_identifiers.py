"""The ledger id and fiscal year rules live in the netdisk service, once, for REST, share and the pages alike."""

from __future__ import annotations

import uuid

import pytest

from eacct import errors
from eacct.netdisk import service


def test_one_ledger_id_parser_gives_one_spelling_per_ledger():
    ledger = uuid.uuid4()
    assert service.canonical_ledger_id(str(ledger).upper()) == str(ledger)
    assert service.canonical_ledger_id(ledger.hex) == str(ledger)
    arabic_one = str(ledger).replace("1", "\u0661") if "1" in str(ledger) else "\u0661" + str(ledger)[1:]
    with pytest.raises(errors.Invalid):
        service.canonical_ledger_id(arabic_one)
    with pytest.raises(errors.NotFound, match="云备份中没有这个账套"):
        service.canonical_ledger_id("not-a-uuid", errors.NotFound("云备份中没有这个账套"))


@pytest.mark.parametrize("year", ["1989", "2101", "20x4", "²⁰²⁴", "02024", 1989, 2101])
def test_year_range_is_a_service_rule(year):
    with pytest.raises(errors.InvalidYear):
        service.fiscal_year(year)


@pytest.mark.parametrize("year", ["1990", "2100", 2024])
def test_years_in_range_are_kept(year):
    assert service.fiscal_year(year) == int(year)


async def test_services_taking_a_year_refuse_one_out_of_range_whatever_path_called_them():
    # Refused before the database is touched: neither sessions nor hooks are needed.
    with pytest.raises(errors.InvalidYear):
        await service.year_versions(None, str(uuid.uuid4()), 2101)
    with pytest.raises(errors.InvalidYear):
        await service.delete_backup(None, None, None, 1, str(uuid.uuid4()), 1989, "password", "127.0.0.1")
