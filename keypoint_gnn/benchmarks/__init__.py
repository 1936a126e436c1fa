"""Performance benchmarks of keypoint-gnn: one concept per module.

  machine       the machine a run happened on (CPU, cores, memory, TF, GPU, load average)
  measure       wall-time medians, interleaved so that compared variants share the same load
  isolation     one measurement per subprocess: its peak resident memory, under a memory cap
  worker        the subprocess entry point (`python -m keypoint_gnn.benchmarks.worker`)
  interconnect  CNN->graph->CNN interconnects, TF vs a NumPy per-keypoint loop reference
  training      seconds per training step, keypoint models vs a matched plain CNN
  real_data     training steps of the real-data presets vs their matched plain networks
  graphs        graph kinds at equal parameters vs the GCN; ViG's kNN graph as N grows
  inference     batch-1 / batch-64 latency: Keras, SavedModel, TFLite
  scale         dense vs sparse grid graph and the keypoint count, as the size grows
  goals         the performance goals as PASS/MISS lines
  profile       per-layer time breakdown, to find what dominates a missed goal
  report        benchmarks.json and the Markdown tables

The command line is `python -m trainers.benchmark`.
"""
