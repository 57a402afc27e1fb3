"""Offline benchmarks for mergekit-fw, one folder per tier, rendered into docs/benchmarks.md.

- zoo/: the re-routing expert zoo (16 string-task experts) and its experiments 1-3
- systems/: memory, LMO speed, wall time (a 66M random model) and resume overhead
- minilm/: a real pretrained tier (MiniLM experts on BBC News)
- vision/: a tiny ViT with 20 experts (the paper's Tables 2 and 3)
- lora/: LoRA adapters as vertices against densified pools (docs/benchmarks_lora.md)
- demo/: constraint sets and starts on the `make demo` zoo (docs/starts.md, README)
- common.py: paths (.cache/ for models and raw rows, results/ for what the docs show)

`make bench` (= `python -m benchmarks.run`) runs the steps; `python -m benchmarks.report`
renders docs/benchmarks.md from benchmarks/results/ alone.
"""
