#!/usr/bin/env python3
"""Runs drain3 (the reference Drain implementation, PyPI, MIT) over Aegis's known-template
log sample and prints its grouping accuracy against the true templates, and whether its
grouping equals the truth. Aegis's own miner is checked against the same truth by
`detectors/src/drain/tests.rs`.

    /var/tmp/aegis-venv/bin/pip install drain3
    /var/tmp/aegis-venv/bin/python benches/detectors/drain_reference.py
"""
import collections
import pathlib
import time

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

sample = pathlib.Path(__file__).resolve().parents[2] / "detectors/tests/data/log_sample.tsv"
rows = [l.split("\t", 1) for l in sample.read_text().splitlines() if "\t" in l]

config = TemplateMinerConfig()
config.drain_sim_th = 0.4
config.drain_depth = 4
config.drain_max_children = 100
# The same variables Aegis masks (drain3 needs them spelled out as regexes).
config.masking_instructions = [
    MaskingInstruction(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
    MaskingInstruction(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?(?![\w.])", "IP"),
    MaskingInstruction(r"(?<!\w)(0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,})(?!\w)", "HEX"),
    MaskingInstruction(r"(?<![\w.])-?\d+(\.\d+)?", "NUM"),
]
config.mask_prefix = "<"
config.mask_suffix = ">"
miner = TemplateMiner(config=config)
started = time.perf_counter()
mined = [miner.add_log_message(line)["cluster_id"] for _, line in rows]
elapsed = time.perf_counter() - started

truth = [t for t, _ in rows]
by_truth = collections.defaultdict(set)
by_mined = collections.defaultdict(set)
for i, (t, m) in enumerate(zip(truth, mined)):
    by_truth[t].add(i)
    by_mined[m].add(i)
correct = sum(1 for i in range(len(rows)) if by_truth[truth[i]] == by_mined[mined[i]])
print(f"drain3: {len(rows)} lines, {len(by_mined)} templates (truth: {len(by_truth)}), "
      f"grouping accuracy {correct / len(rows):.3f}, {len(rows) / elapsed / 1e3:.0f} k lines/s")
