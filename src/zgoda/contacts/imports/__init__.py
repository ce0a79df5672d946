"""File imports: read CSV, XLSX and JSON Lines as a stream, map columns, import in all-or-nothing batches."""
