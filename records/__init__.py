"""Batch records: what a run did, for QA, from the run journal, the audit trail and the store.

Offline code, never in the control cycle: :mod:`records.model` gathers a run's record,
:mod:`records.render` turns it into one HTML document (plots inline), :mod:`records.pdf` prints
that document to PDF with headless Chromium, :mod:`records.export` writes the run's data as CSV or
Parquet and :mod:`records.archive` bundles everything into one checksummed zip (docs/records.md).
Runtime packages never import this one (import contract ``records``).
"""
