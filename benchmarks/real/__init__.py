"""Real pretrained LLM tier: SmolLM2-135M-Instruct, one LoRA adapter per instruction task (issue 21)."""
