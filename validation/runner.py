"""great-expectations plumbing: run a suite on a Spark DataFrame, bounded in cost and in driver memory.

One ``GxRunner`` per gate run holds an ephemeral great-expectations context (nothing to set up on disk) with a
Spark data source. Each target becomes a dataframe asset validated as a whole batch.

Cost (great_expectations#2024, #4267 report Spark validation doubling job times and collecting to the driver):

* the data source does NOT persist the DataFrame (great-expectations' default would cache the whole table);
  the caller caches small projections when it pays off;
* first pass: ``partial_unexpected_count`` 0, so no expectation runs a "find some bad rows" scan; the
  aggregate metrics of all expectations are bundled into few Spark jobs;
* second pass, only when something failed: the failed expectations alone, with up to ``examples`` bad rows
  each (great-expectations caps any row list at 200). A failing check finds its bad rows quickly.

Results go to a validation-results store: a folder when ``store_dir`` is given (so Data Docs list earlier runs
too), memory otherwise. Data Docs, when ``docs_dir`` is given, are rebuilt incrementally for this run's results.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from pyspark.sql import DataFrame

from validation.report import EXPECTATION, CheckResult, json_safe

log = logging.getLogger(__name__)
# great-expectations logs every data-source load and default lookup at INFO; the gate prints its own report
logging.getLogger("great_expectations").setLevel(logging.WARNING)

DATASOURCE = "spark"
DOCS_SITE = "local_site"
FIRST_PASS = {"result_format": "SUMMARY", "partial_unexpected_count": 0}


class GxRunner:
    """Validate Spark DataFrames against expectation lists; keep results for Data Docs."""

    def __init__(self, *, docs_dir: str | Path | None = None, store_dir: str | Path | None = None,
                 examples: int = 5):
        self.docs_dir = Path(docs_dir) if docs_dir else None
        self.examples = examples
        defaults = InMemoryStoreBackendDefaults()
        stores = dict(defaults.stores)
        if store_dir:
            stores[defaults.validation_results_store_name] = {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(store_dir)},
            }
        sites = {}
        if self.docs_dir:
            sites[DOCS_SITE] = {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        config = DataContextConfig(store_backend_defaults=defaults, stores=stores, data_docs_sites=sites,
                                   analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False))
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.datasource = self.context.data_sources.add_spark(name=DATASOURCE, persist=False)
        self._documented: list = []

    def validate(self, suite_name: str, target: str, df: DataFrame, expectations: list[gxe.Expectation], *,
                 run_name: str, examples_df: DataFrame | None = None) -> list[CheckResult]:
        """Run ``expectations`` on ``df``; one CheckResult per expectation, failed ones with example rows.

        ``examples_df`` (default ``df``) is what bad rows are drawn from: a wider frame than the one validated,
        e.g. raw lines with their text when only the reason column was cached for the checks.
        """
        if not expectations:
            return []
        run_id = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.timezone.utc))
        result = self._run(suite_name, target, df, expectations, FIRST_PASS, run_id)
        checks = [_check(target, r) for r in result.results]
        to_explain = [r.expectation_config for r in result.results if not r.success and not _error(r)]
        if to_explain and self.examples > 0:
            second = self._run(
                f"{suite_name}.failed_examples", f"{target}_failed_examples",
                df if examples_df is None else examples_df,
                [_copy(cfg) for cfg in to_explain],
                {"result_format": "COMPLETE", "partial_unexpected_count": self.examples,
                 "include_unexpected_rows": True},
                run_id)
            found = {_key(r.expectation_config): _examples(r.result or {}, self.examples) for r in second.results}
            for check, r in zip(checks, result.results):
                check.examples = found.get(_key(r.expectation_config), [])
        return checks

    def build_docs(self) -> str | None:
        """Render Data Docs for this run's results (earlier pages stay); returns the index path, or None."""
        if not self.docs_dir or not self._documented:
            return None
        self.context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=self._documented)
        return str(self.docs_dir / "index.html")

    def _run(self, suite_name: str, asset_name: str, df: DataFrame, expectations: list, result_format: dict,
             run_id: RunIdentifier):
        asset = self.datasource.add_dataframe_asset(name=asset_name)
        batch = asset.add_batch_definition_whole_dataframe("whole")
        # a suite owns its expectations: add copies, so the caller's list can be validated again
        suite = self.context.suites.add(
            gx.ExpectationSuite(name=suite_name, expectations=[copy.copy(e) for e in expectations]))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": df}, result_format=result_format, run_id=run_id)
        self._documented.append(ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name), run_id=run_id,
            batch_identifier=f"{DATASOURCE}-{asset_name}"))
        return result


def _error(r) -> str | None:
    """The exception message when an expectation could not be evaluated (e.g. its column is missing)."""
    info = r.exception_info or {}
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "exception while evaluating the expectation")
    return None


def _check(target: str, r) -> CheckResult:
    cfg = r.expectation_config
    result = r.result or {}
    if "observed_value" in result:
        observed = result["observed_value"]
    elif "unexpected_count" in result:
        observed = {k: result[k] for k in ("unexpected_count", "element_count", "unexpected_percent", "missing_count")
                    if k in result}
    else:
        observed = None
    expected = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
    return CheckResult(target=target, name=cfg.type, description=cfg.description or cfg.type, kind=EXPECTATION,
                       success=bool(r.success), observed=json_safe(observed), expected=json_safe(expected),
                       error=_error(r))


def _copy(cfg) -> gxe.Expectation:
    """A fresh expectation from a configuration (a suite owns its expectations, so reuse would move them)."""
    expectation = cfg.to_domain_obj()
    expectation.id = None
    return expectation


def _key(cfg) -> str:
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    return cfg.type + json.dumps(json_safe(kwargs), sort_keys=True)


def _examples(result: dict, limit: int) -> list:
    """A few offending rows (dicts) or, when the expectation only reports values, values."""
    rows = result.get("unexpected_rows")
    if rows is None:
        rows = (result.get("details") or {}).get("unexpected_rows")
    if rows is None:
        rows = result.get("partial_unexpected_list")
    if not rows:
        return []
    picked = []
    for row in list(rows)[:limit]:
        picked.append(row.asDict() if hasattr(row, "asDict") else row)
    return json_safe(picked)
