"""The batch side's logic: what the Dagster assets of ``orchestration/`` compute, as plain functions.

Each module reads the warehouse through DuckDB and returns Arrow tables matching a contract of
:mod:`schemas.batch`; :mod:`.store` lands them per UTC day. Asset bodies stay thin so that every
number here is unit-tested without Dagster.
"""
