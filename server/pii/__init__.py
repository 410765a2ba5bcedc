"""PII: classify every column once, mask before any value leaves.

- `model`: entity names, `ColumnClassification`, `MaskingFailed` (imports nothing heavy).
- `keys`, `operators`: the mask key and the operator registry (`hash`, `partial`, `redact`, `null`).
- `engine`, `recognizers`, `phones`: Presidio built without downloads, plus Bastion's recognizers.
- `scan`: free-text scanning that replaces only the detected spans.
- `classify`, `catalog_scan`: column classification rules and the cached catalog scan.
- `mask`: carrying out a per-column masking plan on a result, failing closed.

Importing this package loads none of Presidio or spaCy; `engine.get_engine` does, on first use.
"""
