"""Where vertices come from: the safetensors reader, the streamed vertex pool, and LoRA
adapters as vertices (files, checks, factor arithmetic, the factor-space variant).
"""
