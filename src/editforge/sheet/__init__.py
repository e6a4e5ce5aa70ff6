"""Spreadsheet-driven dataset synthesis: workbook -> plan -> jobs -> images + journal -> workbook.

Modules: `workbook` (xlsx/csv I/O), `journal` (SQLite, the source of truth), `render` (journal ->
workbook), `plan` (row semantics), `seeds`, `quality` (weight-free output checks), `synth` (the run).
"""
