"""Spreadsheet-driven dataset synthesis: workbook -> plan -> jobs -> images + journal -> workbook.

Modules: `schema` (the workbook's columns and words), `workbook` (xlsx/csv I/O, row ids, formulas),
`journal` (SQLite, the source of truth), `render` (journal -> workbook, by row id, into the file as it
is on disk), `plan` (row semantics), `seeds`, `quality` (weight-free output checks), `synth` (the run),
`engine` (the model's half of a row, made in this process), `ray_engine` (... or on a Ray cluster), `launch`
(synth with a model, as the command runs it), `team` (the processes of an `accelerate launch`).
"""
