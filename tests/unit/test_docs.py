"""The documentation stays true to the code it describes."""

from __future__ import annotations

from conftest import ROOT
from feature_store.domain.catalog import CATALOG


def test_features_page_lists_every_feature_with_its_description() -> None:
    page = (ROOT / "docs" / "features.md").read_text()
    for (name, version), fs in CATALOG.items():
        assert f"## {name} v{version}" in page
        for f in fs.features:
            assert f"| `{f.name}` | {f.dtype} |" in page and f.description in page, f.name
