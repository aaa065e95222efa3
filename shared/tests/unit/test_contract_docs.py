import json

from ioc_shared.contracts.__main__ import topics_markdown
from ioc_shared.contracts.envelope import envelope_json_schema
from ioc_shared.platform.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "contracts"


def test_published_contract_documents_match_the_code() -> None:
    """Regenerate with `python -m ioc_shared.contracts docs/contracts` after changing a contract."""
    assert (DOCS / "topics.md").read_text(encoding="utf-8") == topics_markdown()
    committed = json.loads((DOCS / "envelope.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(envelope_json_schema())
