"""Where the feature SQL runs: one set of SQL strings, two engines (DuckDB and Apache Spark).

The roll-ups, features, labels and the loader's validation rules are written once, in DuckDB's
SQL dialect. An `Engine` runs them:

- `DuckDBEngine(con)`: the embedded default; executes the strings as they are.
- `SparkEngine(spark)`: transpiles each string to Spark SQL with sqlglot
  (`sqlglot.transpile(sql, read="duckdb", write=SparkSQL)`: the stock Spark dialect, with
  TIMESTAMPTZ written as TIMESTAMP_LTZ; cached per string) and materializes tables as temporary
  views over eagerly computed, locally checkpointed DataFrames (the rows cached on the
  executors, memory then disk, the plan lineage cut), in a Spark session of its own
  (`spark.newSession()`: temp views and SQL settings per dataset; SparkContext, executors and
  their memory shared). A replaced table's rows are freed at once.

SQL that both engines read must stay inside what sqlglot translates faithfully: integer day
numbers instead of date arithmetic where possible, `GROUPING(col)` with one column, named
windows, `?` parameters, no DuckDB-only functions (`arg_max`, `list`, `read_parquet`, ...).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import duckdb
import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.dialects.spark import Spark

from features.settings import get_feature_settings

if TYPE_CHECKING:  # pyspark is optional: imported only by the Spark engine
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
Params = list[Any] | None

# Session settings every Spark engine needs so results match DuckDB's: UTC, naive timestamps
# (DuckDB's TIMESTAMP is sqlglot's TIMESTAMP_NTZ), Arrow for pandas transfers.
SPARK_SQL_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
}


@runtime_checkable
class Engine(Protocol):
    """What the feature, label and loader code needs from a SQL engine."""

    name: str

    def create_table(
        self, name: str, select_sql: str, params: Params = None, *, temp: bool = True
    ) -> None:
        """Materialize `select_sql` as table `name` (replacing one of that name)."""
        ...

    def create_view(self, name: str, select_sql: str) -> None:
        """A lazy view (replacing one of that name); read each time it is queried."""
        ...

    def df(self, select_sql: str, params: Params = None) -> pd.DataFrame:
        """Run a query and return the result as a pandas frame."""
        ...

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """Make a pandas frame queryable as `name`."""
        ...

    def unregister(self, name: str) -> None:
        """Forget a frame registered with `register`."""
        ...

    def drop(self, name: str) -> None:
        """Drop a table or view if it exists."""
        ...

    def table_exists(self, name: str) -> bool: ...

    def close(self) -> None: ...


class DuckDBEngine:
    """The embedded engine: the SQL strings run unchanged on one DuckDB connection."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def create_table(
        self, name: str, select_sql: str, params: Params = None, *, temp: bool = True
    ) -> None:
        kind = "TEMP TABLE" if temp else "TABLE"
        self.con.execute(f"CREATE OR REPLACE {kind} {name} AS {select_sql}", params)

    def create_view(self, name: str, select_sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {select_sql}")

    def df(self, select_sql: str, params: Params = None) -> pd.DataFrame:
        return self.con.execute(select_sql, params).df()

    def register(self, name: str, frame: pd.DataFrame) -> None:
        self.con.register(name, frame)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def drop(self, name: str) -> None:
        if self.table_exists(name):
            kind = "VIEW" if self._is_view(name) else "TABLE"
            self.con.execute(f"DROP {kind} IF EXISTS {name}")

    def table_exists(self, name: str) -> bool:
        found = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]
        ).fetchall()[0][0]
        return bool(found) or self._is_view(name)

    def _is_view(self, name: str) -> bool:
        return bool(
            self.con.execute(
                "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]
            ).fetchall()[0][0]
        )

    def close(self) -> None:
        self.con.close()


class SparkSQL(Spark):
    """sqlglot's Spark dialect, with DuckDB's TIMESTAMPTZ written as Spark's TIMESTAMP_LTZ.

    The engine sets `spark.sql.timestampType=TIMESTAMP_NTZ` (DuckDB's naive TIMESTAMP), under
    which a bare `TIMESTAMP` means NTZ: stock sqlglot writes TIMESTAMPTZ as `TIMESTAMP`, which
    would then drop the UTC offsets the loader converts.
    """

    class Generator(Spark.Generator):
        TYPE_MAPPING = {  # noqa: RUF012  (sqlglot's own class attribute style)
            **Spark.Generator.TYPE_MAPPING,
            exp.DataType.Type.TIMESTAMPTZ: "TIMESTAMP_LTZ",
        }

        def anonymous_sql(self, expression: exp.Anonymous) -> str:
            # DuckDB's isfinite(x) has no Spark twin: spelled out, NULL for NULL as in DuckDB
            # (Spark's isnan(NULL) is false, and false OR NULL stays NULL).
            if str(expression.this).lower() == "isfinite" and len(expression.expressions) == 1:
                x = self.sql(expression.expressions[0])
                return f"NOT (ISNAN({x}) OR ABS({x}) = CAST('Infinity' AS DOUBLE))"
            return super().anonymous_sql(expression)


@functools.lru_cache(maxsize=512)
def to_spark_sql(sql: str) -> str:
    """The DuckDB-dialect statement in Spark SQL (one statement; cached per string)."""
    statements = sqlglot.transpile(sql, read="duckdb", write=SparkSQL)
    if len(statements) != 1:
        raise ValueError(f"expected one SQL statement, got {len(statements)}")
    return statements[0]


def spark_session(
    master: str | None = "local[*]",
    app_name: str = "expansion-scoring",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession (the active one if any, else a new one) set up for the feature SQL.

    `master` is any Spark master URL (`local[*]`, `spark://host:7077`, `yarn`, `k8s://...`);
    None leaves it to `spark-submit` / `SPARK_MASTER`. `conf` adds or overrides settings.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if (master or "").startswith("local"):
        # Local Python workers run this interpreter (the venv), not whatever `python3` is;
        # PySpark reads the variable when it starts the context.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**SPARK_SQL_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    return spark


def _quiet_pandas_warning() -> None:
    # pyspark 4.x warns on every pandas conversion that pandas 3 is not fully supported; the
    # paths used here are covered by tests/test_spark.py.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")


class SparkEngine:
    """Apache Spark: the same SQL strings, transpiled by sqlglot, tables as checkpointed views."""

    name = "spark"

    def __init__(self, spark: SparkSession, *, isolate: bool = True) -> None:
        _quiet_pandas_warning()
        # A session of its own: temp views are per dataset, executors and cache are shared.
        self.spark = spark.newSession() if isolate else spark
        for key, value in SPARK_SQL_CONF.items():
            self.spark.conf.set(key, value)
        self._cached: dict[str, SparkDataFrame] = {}

    def sql(self, select_sql: str, params: Params = None) -> SparkDataFrame:
        """The Spark DataFrame of a DuckDB-dialect query (lazy)."""
        return self.spark.sql(to_spark_sql(select_sql), args=params or None)

    def create_table(
        self, name: str, select_sql: str, params: Params = None, *, temp: bool = True
    ) -> None:
        started = time.perf_counter()
        frame = self._materialize(self.sql(select_sql, params))
        self._replace(name, frame)
        log.debug("spark: %s in %.2f s", name, time.perf_counter() - started)

    def create_view(self, name: str, select_sql: str) -> None:
        self.put(name, self.sql(select_sql), cache=False)

    def put(self, name: str, frame: SparkDataFrame, *, cache: bool = False) -> None:
        """Expose a Spark DataFrame to the SQL as `name` (optionally materialized now)."""
        self._replace(name, self._materialize(frame) if cache else frame)

    def _materialize(self, frame: SparkDataFrame) -> SparkDataFrame:
        """Compute now and keep the rows on the executors, cutting the plan's lineage.

        A local checkpoint (executor memory, spilling to disk), not `cache()`: every later
        query would otherwise re-analyze and match the whole lineage of every table below it
        against every cached plan, which made the feature queries ~10x slower.
        """
        return frame.localCheckpoint(eager=True)

    def _replace(self, name: str, frame: SparkDataFrame) -> None:
        old = self._cached.pop(name, None)
        frame.createOrReplaceTempView(name)
        self._cached[name] = frame
        if old is not None and old is not frame:
            _release(old)

    def table(self, name: str) -> SparkDataFrame:
        return self.spark.table(name)

    def df(self, select_sql: str, params: Params = None) -> pd.DataFrame:
        return to_pandas(self.sql(select_sql, params))

    def register(self, name: str, frame: pd.DataFrame) -> None:
        self._replace(name, self.spark.createDataFrame(frame))

    def unregister(self, name: str) -> None:
        self.drop(name)

    def drop(self, name: str) -> None:
        old = self._cached.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if old is not None:
            _release(old)

    def table_exists(self, name: str) -> bool:
        return bool(self.spark.catalog.tableExists(name))

    def close(self) -> None:
        for name in list(self._cached):
            self.drop(name)


def _release(frame: SparkDataFrame) -> None:
    """Free a replaced table's rows now (checkpoint blocks), not at the JVM's next GC."""
    try:
        plan = frame._jdf.queryExecution().logical()  # classic Spark (py4j) only
        if plan.getClass().getSimpleName() == "LogicalRDD":
            plan.rdd().unpersist(False)
    except Exception:  # Spark Connect or another plan shape: the context cleaner frees it
        log.debug("spark: could not release a replaced table", exc_info=True)


def to_pandas(frame: SparkDataFrame) -> pd.DataFrame:
    """A Spark result as pandas the way DuckDB's `.df()` gives it (decimals as float64)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    decimals = [f.name for f in frame.schema.fields if isinstance(f.dataType, DecimalType)]
    if decimals:
        frame = frame.select(
            *[
                F.col(f"`{c}`").cast("double").alias(c) if c in decimals else F.col(f"`{c}`")
                for c in frame.columns
            ]
        )
    return frame.toPandas()


def connect(
    temp_dir: Path | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC that may spill to disk.

    `memory_limit` (default: setting `EXPANSION_DUCKDB_MEMORY_LIMIT`, 25% of RAM) caps DuckDB's
    memory; larger aggregations and tables then spill to `temp_dir`.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    limit = memory_limit or get_feature_settings().duckdb_memory_limit
    if limit:
        con.execute("SET memory_limit = ?", [limit])
    spill = temp_dir or Path(tempfile.gettempdir()) / "expansion-duckdb"
    con.execute("SET temp_directory = ?", [str(spill)])
    con.execute("SET preserve_insertion_order = true")
    return con


def make_engine(
    engine: str | Engine = "duckdb",
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    spark: SparkSession | None = None,
    spark_master: str | None = None,
) -> Engine:
    """An engine from a name (`duckdb`, `spark`) or an engine object as it is."""
    if not isinstance(engine, str):
        return engine
    if engine == "duckdb":
        if con is None:
            con = connect()
        return DuckDBEngine(con)
    if engine == "spark":
        return SparkEngine(spark or spark_session(spark_master or "local[*]"))
    raise ValueError(f"engine must be 'duckdb' or 'spark', not {engine!r}")
