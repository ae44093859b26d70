"""Published event contracts match their committed snapshots (docs/events/<type>.v<n>.json).

A contract is a promise to other services: changing a payload's schema shows up here as a diff
to review. A compatible change (a new optional field) is accepted by regenerating the snapshots
with `panthera openapi`; a breaking one needs a new ``version`` (a new snapshot), and the old
version's snapshot stays until no consumer reads it.
"""

from __future__ import annotations

import pytest

from panthera.auth import events as auth_events
from panthera.runtime.contracts import event_schemas, published_contracts
from panthera.users import events as users_events
from tests.contracts.snapshots import REPO, stale_files

EVENTS_DIR = REPO / "docs" / "events"
SCHEMAS = event_schemas()


def test_every_users_and_auth_contract_has_a_snapshot() -> None:
    for contract in (*users_events.PUBLISHED, *auth_events.PUBLISHED):
        key = f"{contract.event_type}.v{contract.version}"
        assert key in SCHEMAS, f"{contract.__name__} is published but not generated"
    published = published_contracts()
    assert set(published["users"]) == set(users_events.PUBLISHED)
    assert set(published["auth"]) == set(auth_events.PUBLISHED)


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_contract_matches_its_snapshot(key: str) -> None:
    document = SCHEMAS[key]
    assert document["schema"]["type"] == "object"
    assert key == f"{document['event_type']}.v{document['version']}"
    problems = stale_files(EVENTS_DIR, {key: document})
    problems = [problem for problem in problems if "nothing generates it" not in problem]
    assert not problems, (
        f"the contract of {key} differs from its snapshot. If the change is compatible "
        "(consumers of this version still understand it), run `panthera openapi` and commit "
        "the new snapshot; if not, publish a new version instead.\n\n" + "\n\n".join(problems)
    )


def test_no_snapshot_lost_its_contract() -> None:
    """Removing or renaming a published contract is a breaking change for its consumers."""
    stray = sorted(path.name for path in EVENTS_DIR.glob("*.json") if path.stem not in SCHEMAS)
    assert not stray, (
        f"snapshots without a published contract: {stray}. Consumers may still expect these "
        "events; if retiring them is intended, delete the snapshots in the same change."
    )
