"""Our one custom expectation: a Spark SQL query that must return no row, run once instead of twice.

great-expectations' UnexpectedRowsExpectation computes two metrics from its query: the row count and the
first 200 rows. On Spark that executes the query twice, even when it passes (nearly always). This subclass
asks only for the count, unless the result format is COMPLETE, which our gate uses in its second pass over
failed checks (validation/runner.py) to fetch example rows. Everything else (the ``{batch}`` placeholder,
rendering in Data Docs) is inherited.
"""
from __future__ import annotations

from great_expectations.expectations import UnexpectedRowsExpectation

ROW_COUNT = "unexpected_rows_query.row_count"
ROWS = "unexpected_rows_query.table"


class ExpectQueryToReturnNoRows(UnexpectedRowsExpectation):
    """Fails if ``unexpected_rows_query`` returns any row; the query names offending rows (``{batch}`` = the data)."""

    def get_validation_dependencies(self, execution_engine=None, runtime_configuration=None):
        dependencies = super().get_validation_dependencies(execution_engine=execution_engine,
                                                           runtime_configuration=runtime_configuration)
        if not _wants_rows(self._get_result_format(runtime_configuration=runtime_configuration)):
            dependencies.remove_metric_configuration(ROWS)
        return dependencies

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine=None):
        if ROWS in metrics:
            return super()._validate(metrics, runtime_configuration, execution_engine)
        count = metrics[ROW_COUNT]
        return {"success": count == 0, "result": {"observed_value": count}}


def _wants_rows(result_format) -> bool:
    name = result_format.get("result_format") if isinstance(result_format, dict) else result_format
    return str(name).upper() == "COMPLETE"
