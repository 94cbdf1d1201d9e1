"""schemathesis hooks of test_openapi_fuzz.py: the rules of the API a JSON Schema cannot state.

Some answers to schema-valid data depend on what is true at run time, which no schema can foresee;
each is a documented 400 with its own code:

- ``unknown_feature``: a selection may name a feature of any catalog version (the document's enum),
  but the version read is often the served one, known only at run time;
- ``watermark_in_future``: refresh_cache's ``since`` past the source's clock;
- ``invalid_parameter`` from run_etl's snapshot of a day that has not ended (``date`` today or later).

``positive_data_acceptance`` runs as the check below: these three answers pass when their condition
holds, and every other response goes to the built-in check (the test excludes the built-in one, so
nothing else is relaxed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from feature_store.domain.catalog import CATALOG

_IN_EVERY_VERSION = set.intersection(*({f.name for f in fs.features} for fs in CATALOG.values()))


def _selected(case: Any) -> list[str]:
    if isinstance(case.body, dict) and isinstance(case.body.get("features"), list):
        return [str(n) for n in case.body["features"]]
    features = (case.query or {}).get("features")
    if isinstance(features, list):
        return [str(n) for n in features]
    return features.split(",") if isinstance(features, str) else []


def _future(text: Any) -> bool:
    try:
        moment = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) > datetime.now(UTC)


def _runtime_refusal(case: Any, code: str | None) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    if code == "unknown_feature" or (case.method == "HEAD" and code is None):
        return bool(set(_selected(case)) - _IN_EVERY_VERSION)
    if code == "watermark_in_future":
        return body.get("mode") == "incremental" and _future(body.get("since"))
    if code == "invalid_labels" and body.get("step") == "training":
        return True  # labels naming users the offline store does not know, or times no schema can judge
    if code == "invalid_parameter" and body.get("step") == "snapshot":
        return isinstance(body.get("date"), str) and date.fromisoformat(body["date"]) >= datetime.now(UTC).date()
    return False


@schemathesis.check
def positive_data_accepted_but_runtime_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, except the documented runtime refusals above when they apply.

    The built-in check lets a 401/403 pass (it cannot know which credentials exist); the fuzz sends the
    test suite's key, whose client may read everything, so here a 401 or 403 to valid data fails.
    """
    if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code in (401, 403):
        raise AssertionError(f"valid data with the test suite's credentials was refused: {response.status_code} "
                             f"{response.text[:200]}")
    if response.status_code == 400 and case.meta is not None and case.meta.generation.mode.is_positive:
        code = (response.json() if response.content else {}).get("error", {}).get("code")
        if _runtime_refusal(case, code):
            return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]
