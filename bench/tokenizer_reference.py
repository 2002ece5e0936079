#!/usr/bin/env python3
"""Checks fedge's SentencePiece ids against Debian's python3-sentencepiece.

Usage: tokenizer_reference.py TOKENIZER_MODEL IDS_JSONL

IDS_JSONL holds one {"text": ..., "ids": [...]} per record, written by
fedge-bench-text --mode=ids. Every record is encoded here with the reference
library; prints `metric tokenizer_ids_match_reference 1` only if every
record's ids are identical, and the first differences otherwise.
"""
import json
import sys

import sentencepiece

processor = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
records = tokens = mismatched = 0
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        record = json.loads(line)
        reference = processor.encode(record["text"])
        records += 1
        tokens += len(reference)
        if reference != record["ids"]:
            mismatched += 1
            if mismatched <= 3:
                print("mismatch:", repr(record["text"][:60]),
                      record["ids"][:10], reference[:10])
print(f"tokenizer reference: {records} records, {tokens} tokens, "
      f"{mismatched} records differ")
print("metric tokenizer_ids_match_reference %d" % (mismatched == 0 and records > 0))
print("metric tokenizer_reference_records %d" % records)
