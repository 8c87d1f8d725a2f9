"""The registry of mirrored kinds (mirror/projections.py `KINDS`) is the one list of them:
a kind added to a table, a Literal, the gateway or the command line without its registry
entry fails here."""

from __future__ import annotations

from typing import get_args

import pytest
from sqlmodel import SQLModel

from portal_service.gateway.base import ListKind, ObjectKind
from portal_service.mirror import tables
from portal_service.mirror.listing import choose_kinds
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    EVENT_ROUTES,
    KINDS,
    MirrorKind,
    kind_named,
)
from portal_service.mirror.reconcile import RECONCILE_KINDS, parse_kinds
from portal_service.mirror.sync import SYNC_KINDS, parse_only

# Gateway kinds that are not mirrored: what the mirror reads of them is looked up, not kept.
NOT_MIRRORED: set[str] = {"price", "product", "event"}


def _mirror_tables() -> set[str]:
    """Every table on MirrorColumns (the mirrored objects and their children)."""
    return {
        table.name
        for table in SQLModel.metadata.sorted_tables
        if {"source_ts", "source_event_id", "raw", "account"} <= set(table.c.keys())
    }


class TestTheRegistryCoversEveryKind:
    def test_the_literal_names_exactly_the_registry(self) -> None:
        assert list(get_args(MirrorKind)) == list(KINDS)
        assert all(name == entry.name for name, entry in KINDS.items())

    def test_every_mirror_table_belongs_to_a_kind_or_its_children(self) -> None:
        owned = [entry.table.name for entry in KINDS.values()]
        owned += [tables.table_of(child).name for e in KINDS.values() for child in e.children]
        assert len(owned) == len(set(owned))
        assert set(owned) == _mirror_tables()

    def test_every_gateway_kind_that_names_a_mirrored_kind_is_how_it_is_retrieved(self) -> None:
        object_kinds = set(get_args(ObjectKind))
        assert object_kinds - NOT_MIRRORED <= set(KINDS)
        for name, entry in KINDS.items():
            if name in object_kinds:
                assert entry.retrieve == name
            else:
                assert entry.retrieve is None

    def test_a_refetchable_kind_can_be_asked_for(self) -> None:
        for name, entry in KINDS.items():
            assert entry.refetchable == (entry.retrieve is not None or name == ENTITLEMENT_SUMMARY)

    def test_every_gateway_list_is_a_kind_sync_lists(self) -> None:
        listed = {entry.list_kind for entry in KINDS.values() if entry.list_kind is not None}
        assert listed == set(get_args(ListKind)) - NOT_MIRRORED
        assert all(entry.cli is not None for entry in KINDS.values() if entry.list_kind)

    def test_every_event_route_names_a_kind(self) -> None:
        assert {route.kind for route in EVENT_ROUTES.values()} <= set(KINDS)


class TestCommandLineNames:
    def test_sync_and_reconcile_name_the_registry_kinds(self) -> None:
        names = [entry.cli for entry in KINDS.values() if entry.cli is not None]
        assert len(names) == len(set(names))
        assert list(RECONCILE_KINDS) == names
        assert list(SYNC_KINDS) == [n for n in names if kind_named(n).list_kind is not None]
        assert parse_kinds(None) == names
        assert parse_only(None) == list(SYNC_KINDS)

    def test_every_name_leads_back_to_its_kind(self) -> None:
        for name, entry in KINDS.items():
            if entry.cli is not None:
                assert kind_named(entry.cli).name == name

    def test_a_name_outside_the_choices_is_refused(self) -> None:
        assert choose_kinds("b, a", ["a", "b", "c"]) == ["a", "b"]

    @pytest.mark.parametrize("value", ["a,zz", " , "])
    def test_an_unknown_or_empty_choice_is_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match="choose from a, b"):
            choose_kinds(value, ["a", "b"])
