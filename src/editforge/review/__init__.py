"""`editforge review`: look at generated pairs in a browser; accept, reject or regenerate them.

    view.py     the workbook as the journal will leave it, one RowView per row
    session.py  verdicts and regeneration, written through the synth journal
    files.py    which files the server may send
    access.py   who may use the app: its token, its own origin
    server.py   the Starlette app and its server; static/ holds the page
    export.py   accepted rows -> the dataset exporter
"""
