"""Parses Prometheus text from stdin with the official client's parser and prints a JSON summary:
{family: {"type": ..., "samples": [[name, labels, value], ...]}}. Exits non-zero on a parse error."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(families))
