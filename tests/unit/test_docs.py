"""The documentation stays true to the code it describes."""

from __future__ import annotations

import yaml

from conftest import ROOT
from feature_store.domain.catalog import CATALOG


def test_features_page_lists_every_feature_with_its_description() -> None:
    page = (ROOT / "docs" / "features.md").read_text()
    for (name, version), fs in CATALOG.items():
        assert f"## {name} v{version}" in page
        for f in fs.features:
            assert f"| `{f.name}` | {f.dtype} |" in page and f.description in page, f.name


def test_openapi_generated_parts_are_what_the_models_and_the_catalog_say() -> None:
    from feature_store.transports.contract import synced

    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert synced(document) == document, "regenerate: python -m feature_store.transports.contract docs/openapi.yaml"


def test_openapi_operations_are_exactly_what_each_function_serves() -> None:
    from feature_store.transports.etl_api import RUN_STEP
    from feature_store.transports.features_api import READ_BATCH, READ_ONE
    from feature_store.transports.migration_api import RUN_PHASE
    from feature_store.transports.receipts_api import READ_RECEIPT
    from feature_store.transports.refresh_api import REFRESH

    served = {"read_features": READ_ONE, "read_features_batch": READ_BATCH, "refresh_cache": REFRESH,
              "run_etl": RUN_STEP, "run_migration": RUN_PHASE, "read_receipt": READ_RECEIPT}
    pushed = {"ingest_changes", "replicate_changes"}  # Pub/Sub push targets: no OpenAPI operation
    functions = {p.parent.name for p in (ROOT / "functions").glob("*/main.py")}
    assert functions == set(served) | pushed, f"functions this test does not place: {functions - set(served) - pushed}"
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    documented = {}
    for path, item in document["paths"].items():
        function = item["servers"][0]["description"].removeprefix("make up: ")
        endpoint = served[function]
        assert endpoint.path.fullmatch(path.replace("{user_id}", "u1").replace("{request_id}", "r1")), path
        methods = {m.upper() for m in item if m in ("get", "head", "post", "put", "patch", "delete", "options")}
        assert methods == set(endpoint.allowed), path
        assert {p["name"] for p in item.get("parameters", []) if p["in"] == "query"} == endpoint.params, path
        documented[function] = path
    assert set(documented) == set(served)
